"""`python -m hypar` runs the command-line interface."""

from hypar.cli import main

if __name__ == "__main__":
    main()
