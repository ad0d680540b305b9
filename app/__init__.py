"""flowcall's core: call any LLM provider the same way, metered per tenant.

Nothing here imports the web layer (nodes/): app/services.py's `build_services` is the composition
root every entry point uses, and nodes.create_app attaches the HTTP surface to what it builds.
"""
