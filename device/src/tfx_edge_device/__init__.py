"""tfx-edge-device: the device side of tfx-edge's over-the-air updates (no TFX, no TensorFlow).

    from tfx_edge_device import client
    result = client.fetch(url, 'root.json', 'digits', '/var/lib/models')

`client` verifies and installs, `health` checks a model with LiteRT before it is switched to,
`releases` is the rule that picks the release a device installs.
"""
__version__ = '0.1.0'
