"""Running programs: execution contexts, CPU streams, shape profiles.

Layering note: the runtime sits below ``engine`` (it runs a lowered ``Program`` and knows
nothing of engine files or build options), so an ``Engine`` can create contexts and streams.
"""

from tensorkiln.runtime.context import ExecutionContext
from tensorkiln.runtime.profiles import Profile, ProfileSet
from tensorkiln.runtime.streams import StreamPool, auto_streams

__all__ = ["ExecutionContext", "Profile", "ProfileSet", "StreamPool", "auto_streams"]
