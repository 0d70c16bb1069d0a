"""`python -m tltk`: the `tltk` command line."""

from tltk.cli import main

if __name__ == "__main__":
    main(prog_name="tltk")
