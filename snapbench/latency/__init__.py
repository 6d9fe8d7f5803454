"""Latency lookup tables and a model's latency block by block.

Import each name from the module that defines it: `table` (LatencyTable, LatencyRow, Settings, BACKENDS),
`model_latency` (profile_model, block_latencies, ProfileRun, ...), `document` (profile_document,
stage_summary). This package re-exports nothing, so mypy checks every import and the command line starts
without loading torch.
"""
