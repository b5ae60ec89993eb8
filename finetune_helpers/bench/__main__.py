"""`python -m finetune_helpers.bench ...`: see finetune_helpers.bench.cli."""
from .cli import main

if __name__ == "__main__":
    main()
