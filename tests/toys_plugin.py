"""The toys as a package of one's own registers them: what an entry point of groups ftlab.methods,
ftlab.data.formats and ftlab.exports.formats loads (tests/test_rooms.py writes the dist-info that declares it)."""

from ftlab.data.formats import FORMATS
from ftlab.exports import EXPORTS
from ftlab.methods import METHODS
from toys import AskTell, Npz, Unlikelihood

METHODS.register(Unlikelihood)
FORMATS.register(AskTell)
EXPORTS.register(Npz)
