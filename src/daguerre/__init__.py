"""daguerre: self-hosted image generation that speaks Luma's Generations API.

`import daguerre` stays light on purpose: the server, the store and the engine live in
subpackages that are imported only where they are used.
"""

__version__ = "0.1.0"
