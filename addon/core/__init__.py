"""The add-on's logic that Blender does not need to run: the backend client and protocol,
jobs and the warm pool, mapping and compression of takes, face keys and their solve, the
installer. Never imports bpy (tests/unit/test_layers.py proves it); plain pytest tests it."""
