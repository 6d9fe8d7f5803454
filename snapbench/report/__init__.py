"""Self-contained HTML reports comparing a baseline UNet with candidates, stage by stage and end to end.

`gather()` collects the data (one JSON-able dict), `render_html()` turns it into a page, `write_report()`
writes both atomically.
"""

from snapbench.report.data import default_out_path, gather, parse_steps
from snapbench.report.render import render_html
from snapbench.report.write import write_report

__all__ = ["gather", "render_html", "write_report", "default_out_path", "parse_steps"]
