"""One module per family, each declaring ``FAMILY = fadiag.registry.Family(...)``: found by
fadiag.registry.families() (adding a family adds a module here; nothing else lists the families)."""
