"""kollate plugin in Python: the world's exported `transform` interface.

The resource implementation lives in `transform.py` (componentize-py looks for a module
named after each exported interface that has resources).
"""

import wit_world.exports


class Transform(wit_world.exports.Transform):
    pass
