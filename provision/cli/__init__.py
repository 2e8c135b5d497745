"""The command line: argument parsing, progress output, exit codes. The only layer that prints or
exits."""
