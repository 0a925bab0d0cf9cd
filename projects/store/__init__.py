"""The workspace store, one module per concern; `projects.workspace.Workspace` is its one public facade.

Each concern is a mixin over `StoreBase` (the connection `db` and the workspace `folder`): taxonomy (nodes,
projects, labels), images, annotations, models (with predictions and pre-label decisions), review (lint
findings, gold images, quality scores), transfer (bulk import and export rows), stats and leases (which
annotator holds which image of a team workspace). Mixins rather than
composed helper objects because every caller keeps calling `ws.add_annotation(...)`, and the concerns call
each other (`mark_gold` reads `annotations`, `add_images` needs `project_id`) through the one `self`: a
composed design would need a forwarding method per public method, or a changed API everywhere.
"""
