"""Many calls at once: a batch's items, asynchronous jobs and their rows, signed callbacks, and
`flowcall batch` (command, reader, writer, runner, resume)."""
