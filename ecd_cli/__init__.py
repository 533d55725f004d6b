"""The ``ecd`` command line. Entry point: :func:`ecd_cli.main.main`. Nothing imports this package."""
