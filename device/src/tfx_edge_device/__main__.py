"""`python -m tfx_edge_device`: the `tfx-edge-device` command."""
import sys

from tfx_edge_device import cli

sys.exit(cli.main())
