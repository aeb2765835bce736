"""`python -m lstm_trading`: the same as the `lstm-trading` command (Lightning's DDP launcher re-runs it)."""

from lstm_trading.cli import main

if __name__ == "__main__":
    main()
