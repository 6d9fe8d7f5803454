"""How far the Neural Engine estimator can be trusted: published on-device latencies, re-estimated.

    rows = load_corpus()                         # snapbench's corpus: figures, settings, source refs
    result = validate(rows)                      # in-sample: the shipped parameters
    result = validate(rows, cross="source")      # out-of-sample: refit without each source, predict it
"""
