"""Characters: cards (V1/V2/V3), card files (PNG, CHARX, JSON), lorebooks and their scanner,
macros, greetings and limelight's own starter characters.

A pure library: no database, no HTTP, no tokenizer (the lorebook scanner is handed a token
counter).  The public surface is re-exported here.
"""

from limelight.characters.card import Asset, CharacterCard
from limelight.characters.defaults import default_characters
from limelight.characters.errors import CardError
from limelight.characters.files import (
    ImportedCard,
    export_charx,
    export_json,
    export_png,
    read_card_file,
)
from limelight.characters.greetings import greetings
from limelight.characters.lorebook import Lorebook, LoreEntry, LorePosition, SelectiveLogic
from limelight.characters.macros import MacroContext, expand_macros
from limelight.characters.naming import slugify
from limelight.characters.parse import ParsedCard, parse_card
from limelight.characters.scanner import Activation, ScanResult, ScanSettings, scan_lorebook
from limelight.characters.world_info import ParsedLorebook, parse_lorebook, to_world_info

__all__ = [
    "Activation",
    "Asset",
    "CardError",
    "CharacterCard",
    "ImportedCard",
    "LoreEntry",
    "LorePosition",
    "Lorebook",
    "MacroContext",
    "ParsedCard",
    "ParsedLorebook",
    "ScanResult",
    "ScanSettings",
    "SelectiveLogic",
    "default_characters",
    "expand_macros",
    "export_charx",
    "export_json",
    "export_png",
    "greetings",
    "parse_card",
    "parse_lorebook",
    "read_card_file",
    "scan_lorebook",
    "slugify",
    "to_world_info",
]
