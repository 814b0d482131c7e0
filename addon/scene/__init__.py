"""Reading and writing the Blender scene: the head and its audio, takes as shape-key
animation, the rest track, Fit Face's keys and landmark empties, and every Blender-version
difference (versions.py). bpy, main thread only; no operators and no UI here."""
