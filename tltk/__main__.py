"""`python -m tltk`: the `tltk` command line."""

from tltk.cli import main

main(prog_name="tltk")
