"""`python -m emovec ...` (and `torchrun ... -m emovec extract ...`): the command line."""

from emovec.cli import main

if __name__ == "__main__":
    main()
