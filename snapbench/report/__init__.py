"""Self-contained HTML reports comparing a baseline UNet with candidates, stage by stage and end to end.

`gather_data.gather()` collects the data (typed, JSON-able), `render.render_html()` turns it into a page,
`write.write_report()` writes both atomically. Import each name from the module that defines it: this
package re-exports nothing, so mypy checks every import and the CLI starts without matplotlib/torch.
"""
