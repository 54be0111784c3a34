"""`python -m peftlab ...` runs the command line (also what `torchrun -m peftlab` launches)."""

from peftlab.cli.main import main

if __name__ == "__main__":
    main()
