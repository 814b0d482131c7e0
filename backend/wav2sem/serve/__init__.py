"""`wav2sem serve`, the JSON-lines backend the add-on talks to (docs/DESIGN.md "Backend protocol").

transport.py    stdin lines in, protocol events out, the worker thread, cancel and shutdown
operations.py   hello, model_info, generate, fit_face: params in, a protocol result out
model_cache.py  the loaded models (the two used last)
workdir.py      the server's temporary folder
The messages themselves are protocol.py's; the command line is commands/serve.py.
"""
