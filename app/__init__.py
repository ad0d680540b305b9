"""flowcall's core: one HTTP endpoint's worth of calling any LLM provider the same way.

Nothing here knows the web layer (nodes/): app.services.build_services is the composition root
every entry point uses, and nodes.create_app attaches the HTTP surface to what it builds.
"""
