"""The word lists and templates that `make_corpus` composes the bundled corpus from.

Plain data, kept apart from the generator's logic. Everything here is ASCII, and no template
holds a blank line: in the corpus a blank line means "a new document starts". The generator
capitalises the first letter of each sentence, so prose patterns start in lower case.
"""

# --- shared names -------------------------------------------------------------------------------

FIRST_NAMES = (
    "Ada", "Omar", "Lena", "Tomas", "Mira", "Jonah", "Ines", "Felix", "Nadia", "Pavel",
    "Yuki", "Amara", "Soren", "Leila", "Mateo", "Hana", "Ravi", "Greta", "Kofi", "Elsa",
    "Diego", "Anouk", "Ivan", "Zara", "Bruno", "Noor", "Emil", "Chiara", "Tariq", "Maren",
)
LAST_NAMES = (
    "Moreau", "Okafor", "Lindqvist", "Tanaka", "Novak", "Herrera", "Kowalski", "Mensah",
    "Fischer", "Costa", "Ivanova", "Haddad", "Byrne", "Nakamura", "Rossi", "Dubois", "Petrov",
    "Achebe", "Larsen", "Silva", "Weber", "Sato", "Kaur", "Quinn", "Varga", "Osei", "Berg",
)
CITIES = (
    "Lyon", "Oslo", "Porto", "Kyoto", "Lima", "Accra", "Dublin", "Quebec", "Perth", "Tallinn",
    "Nairobi", "Bergen", "Seville", "Osaka", "Krakow", "Denver", "Hanoi", "Cusco", "Zurich",
    "Adelaide", "Gdansk", "Tunis", "Valencia", "Riga", "Halifax", "Mombasa", "Utrecht", "Pune",
)

# --- code ---------------------------------------------------------------------------------------

CODE_NOUNS = (
    "item", "value", "score", "price", "name", "record", "node", "edge", "word", "line",
    "token", "order", "user", "point", "row", "cell", "page", "task", "event", "sample",
    "weight", "step", "file", "key", "label", "city", "batch", "entry", "reading", "message",
)
CODE_ATTRIBUTES = ("size", "age", "level", "length", "cost", "rank", "width", "height", "speed")
CODE_VERBS = (
    "compute", "load", "parse", "collect", "find", "build", "update", "merge", "select",
    "check", "format", "scale", "normalize", "split", "clean", "render", "summarize", "measure",
)
CODE_ADJECTIVES = (
    "max", "min", "last", "first", "new", "old", "valid", "active", "mean", "best", "raw", "large",
)
CODE_COMPARISONS = (">", "<", ">=", "<=", "!=")
CODE_OPERATORS = ("+", "-", "*")
CODE_SEPARATORS = (",", ":", "|", ";")
CODE_MESSAGES = (
    "too many {nouns}", "no {adj} {noun} found", "{noun} is out of range",
    "could not {verb} {nouns}",
    "{adj} {noun}:", "done", "{nouns} left:",
)
CODE_HEADERS = (
    "import math", "import os", "import sys", "from collections import Counter",
    "from dataclasses import dataclass", "from pathlib import Path", "import json",
    "# {verb} the {nouns} for the {adj} report", "# helpers to {verb} {nouns}",
    "# TODO: {verb} the {adj} {nouns} in one pass",
)
# Each template is one function, class or snippet; its slots are filled by `code_document`.
CODE_TEMPLATES = (
    '''def {verb}_{nouns}({nouns}):
    total = 0
    for {noun} in {nouns}:
        total = total {op} {noun}
    return total''',
    '''def sum_{adj}_{nouns}({nouns}, limit={limit}):
    """Add up the {nouns} that pass the limit."""
    total = 0
    for {noun} in {nouns}:
        if {noun} {cmp} limit:
            total += {noun}
    return total''',
    '''def {adj}_{noun}({nouns}):
    best = {nouns}[0]
    for {noun} in {nouns}[1:]:
        if {noun} {cmp} best:
            best = {noun}
    return best''',
    '''def count_{nouns}({nouns}):
    counts = {{}}
    for {noun} in {nouns}:
        counts[{noun}] = counts.get({noun}, 0) + 1
    return counts''',
    '''def {verb}_{adj}_{nouns}({nouns}, limit={limit}):
    return [{noun} for {noun} in {nouns} if {noun}.{attr} {cmp} limit]''',
    '''def group_{nouns}_by_{attr}({nouns}):
    groups = {{}}
    for {noun} in {nouns}:
        groups.setdefault({noun}.{attr}, []).append({noun})
    return groups''',
    '''def steps_to_{verb}({noun}):
    steps = 0
    while {noun} > 1:
        {noun} = {noun} // {n}
        steps += 1
    return steps''',
    '''class {Class}:
    """A small {adj} collection of {nouns}."""
    def __init__(self, capacity={n}):
        self.capacity = capacity
        self.{nouns} = []
    def add(self, {noun}):
        if len(self.{nouns}) >= self.capacity:
            raise ValueError("{message}")
        self.{nouns}.append({noun})
    def __len__(self):
        return len(self.{nouns})''',
    '''class {Class}:
    def __init__(self, {attr}, {other}):
        self.{attr} = {attr}
        self.{other} = {other}
    def {verb}(self, factor={n}):
        return self.{attr} * factor {op} self.{other}
    def __repr__(self):
        return f"{Class}({attr}={{self.{attr}}}, {other}={{self.{other}}})"''',
    '''def describe_{noun}({noun}):
    return f"{noun} {{{noun}.{attr}}}: {{{noun}.{other}:.2f}}"''',
    '''def gcd_of_{nouns}(a, b):
    while b:
        a, b = b, a % b
    return a''',
    '''def {verb}_grid(grid):
    total = 0
    for i in range(len(grid)):
        for j in range(len(grid[i])):
            if grid[i][j] {cmp} {limit}:
                total += grid[i][j] * (i + {n})
    return total''',
    '''{nouns} = [{numbers}]
{adj}_{noun} = max({nouns})
print("{message}", {adj}_{noun})''',
    '''def parse_{noun}(line):
    parts = line.split("{sep}")
    try:
        return int(parts[{index}])
    except (IndexError, ValueError):
        return None''',
    '''def {noun}_depth({noun}):
    if {noun} is None:
        return 0
    return 1 + max({noun}_depth({noun}.left), {noun}_depth({noun}.right))''',
    '''def sort_{nouns}({nouns}, reverse=False):
    return sorted({nouns}, key=lambda {noun}: {noun}.{attr}, reverse=reverse)''',
    '''def index_of_{adj}_{noun}({nouns}, target):
    for index, {noun} in enumerate({nouns}):
        if {noun}.{attr} == target:
            return index
    return -1''',
    '''def moving_{attr}({nouns}, window={n}):
    result = []
    for start in range(len({nouns}) - window + 1):
        chunk = {nouns}[start:start + window]
        result.append(sum(chunk) / window)
    return result''',
    '''for {noun} in {verb}_{nouns}({nouns}):
    if not {noun}:
        continue
    print({noun}.{attr}, {noun}.{other})''',
    '''assert {adj}_{noun}([{numbers}]) == {limit}, "{message}"''',
)

# --- prose --------------------------------------------------------------------------------------
# Present-tense topics pair any subject with any predicate: a predicate is written in its base
# form ("wait at ...") and gets its -s when the subject is singular.

PRESENT_TOPICS = {
    "nature": {
        "singular": (
            "the heron", "an old oak", "the river", "a red fox", "the morning fog", "the wind",
            "a small beetle", "the meadow", "a lone wolf", "the tide", "the marsh", "a hawk",
        ),
        "plural": (
            "the geese", "wild bees", "the tall reeds", "most songbirds", "the pines on the ridge",
            "young deer", "the clouds", "the salmon", "the ants", "the ferns", "migrating cranes",
        ),
        "predicates": (
            "wait at the edge of the cold water", "move slowly through the tall grass",
            "turn toward the first light", "carry seeds far beyond the valley",
            "rest in the shade of the hill", "change with every season",
            "return to the same place each year", "grow quiet before a storm",
            "follow the line of the river", "gather near the old stone wall",
            "hide from the heat of the afternoon", "shape the land over many years",
            "catch the last warmth of the evening", "vanish when the frost arrives",
            "drift slowly toward the open sea", "wake long before the sun rises",
            "survive the long dry summer", "feed on what the flood leaves behind",
            "darken the water under the bridge", "sing loudly after a shower of rain",
        ),
        "openers": (
            "In early spring", "At dawn", "After the rain", "By late autumn", "On clear nights",
            "Deep in the winter", "Along the coast", "High above the valley", "In the dry season",
        ),
    },
    "cities": {
        "singular": (
            "the old market", "the night bus", "a narrow street", "the main square", "the harbour",
            "a small bakery", "the city council", "the bridge", "the tram line", "the library",
            "the central station", "a quiet courtyard",
        ),
        "plural": (
            "commuters", "the street lamps", "tourists", "the cafes on the corner",
            "delivery riders", "tall office towers", "the parks", "local artists", "the trains",
            "the neighbours", "street vendors",
        ),
        "predicates": (
            "open before the sun is up", "fill with people at noon",
            "connect the river to the hills", "change slowly over the decades",
            "draw visitors from far away", "stay busy long after midnight",
            "depend on a steady flow of workers", "grow louder as the evening goes on",
            "shape the rhythm of daily life", "need careful planning and repair",
            "look different in the rain", "remember the city as it used to be",
            "wake the district with their noise", "close early on public holidays",
            "smell of fresh bread and coffee", "welcome strangers without asking questions",
            "keep the old names of the streets", "reflect the lights of the passing cars",
            "cost more every year", "empty out during the long holidays",
        ),
        "openers": (
            "On weekday mornings", "In the old town", "Every summer", "Since the new line opened",
            "At rush hour", "Late at night", "In most large cities", "On market days",
        ),
    },
    "science": {
        "singular": (
            "the experiment", "a careful observer", "the theory", "a single cell", "the telescope",
            "the new model", "the sample", "light from a distant star", "the data", "gravity",
            "the reaction", "a good instrument",
        ),
        "plural": (
            "physicists", "the measurements", "most stars", "chemists", "small errors",
            "the results", "atoms", "careful students", "the instruments", "the cells",
            "honest scientists",
        ),
        "predicates": (
            "depend on the temperature of the room", "follow a few simple rules",
            "reveal patterns that were hidden before", "need to be repeated many times",
            "change when the pressure rises", "agree with the earlier prediction",
            "test an idea against the world", "measure the speed of the reaction",
            "explain only part of the story", "carry energy from one place to another",
            "bend the path of light", "grow more precise every year",
            "raise new questions for the next study", "leave a trace that can be measured",
            "obey the same laws as everything else", "absorb more heat than expected",
            "point to a simpler explanation", "vary from one sample to the next",
            "contain more energy than it seems", "settle the question for a while",
        ),
        "openers": (
            "In the laboratory", "Over the last century", "Under a microscope",
            "In careful experiments", "At very low temperatures", "For most purposes",
            "In the simplest model", "Seen from far away",
        ),
    },
}
PRESENT_PATTERNS = (
    "{opener}, it seems that {s} {p}.",
    "Even when {s} {p}, {s2} {p2}.",
    "{s} {p}.",
    "{opener}, {s} {p}.",
    "{s} {p}, and {s2} {p2}.",
    "When {s} {p}, {s2} {p2}.",
    "It is often said that {s} {p}.",
    "{s} {p} because {s2} {p2}.",
    "Nobody is quite sure why {s} {p}.",
    "{opener}, {s} {p}, while {s2} {p2}.",
)

# Past-tense topics follow one named person (and a friend); predicates are already in the past.
PAST_TOPICS = {
    "travel": {
        "predicates": (
            "packed a small bag and left before dawn", "caught the early train to the coast",
            "crossed the border just after noon", "asked a stranger for directions",
            "found a quiet room above a bakery",
            "walked along the harbour until the lights came on",
            "wrote a long letter home", "missed the last ferry of the day",
            "climbed to the old fort above the town", "shared a meal with a family of farmers",
            "bought a map that turned out to be wrong", "slept for most of the bus ride",
            "learned a few words of the local language", "counted the coins left in the purse",
            "waited for hours at a dusty crossroads", "followed a goat track over the hills",
            "took a photograph of the empty square", "swam in a cold lake at sunrise",
            "argued with the driver about the fare", "listened to the rain on the tin roof",
            "sent a postcard with no return address", "found the museum closed for repairs",
        ),
        "places": (
            "station", "road", "village", "hotel", "valley", "market", "ferry", "border town",
            "mountain pass", "guest house",
        ),
        "quotes": (
            "We should have left earlier", "The next bus is not until tomorrow",
            "This road goes all the way to the sea", "I have never seen so many stars",
            "Keep the ticket, you will need it later", "It is cheaper if you walk",
        ),
        "openers": (
            "The next morning", "Later that day", "On the third day", "Just before sunset",
            "After a long wait", "In the evening", "At the border", "Near the end of the trip",
        ),
    },
    "stories": {
        "predicates": (
            "opened the door and listened", "found an old key under the stairs",
            "told no one about the letter", "waited by the window until dark",
            "laughed for the first time in weeks", "remembered a song from childhood",
            "picked up the lantern and went outside", "heard footsteps in the hall",
            "decided to follow the path into the woods", "kept the secret for many years",
            "looked at the clock again", "wrote the name on a scrap of paper",
            "sat down on the cold step", "closed the book without a word",
            "answered the phone on the second ring", "buried the box beneath the apple tree",
            "forgot the warning almost at once", "painted the gate a bright shade of blue",
            "recognised the voice on the radio", "hid the photograph inside a coat pocket",
            "lit a candle and read the letter twice", "refused to say where the money came from",
        ),
        "places": (
            "house", "garden", "attic", "kitchen", "forest", "lighthouse", "orchard", "workshop",
            "library", "harbour",
        ),
        "quotes": (
            "We should go before it gets dark", "I have seen this place before",
            "Nobody else knows about this", "Look, the light is still on",
            "Wait here, I will be back soon", "It was never about the money",
        ),
        "openers": (
            "That night", "A moment later", "Years afterwards", "Without thinking",
            "In the morning", "Long before anyone woke", "When the rain stopped", "Once again",
        ),
    },
}
PAST_PATTERNS = (
    "{opener}, {name} {p}, and {friend} {p2}.",
    "It was {adj} in the {place}, so {pronoun} {p}.",
    "{name} {p}.",
    "{opener}, {name} {p}.",
    "{opener}, {pronoun} {p}.",
    "{name} {p}, and then {pronoun} {p2}.",
    "The {place} was {adj} and {adj2}.",
    '"{quote}," said {name}.',
    "{pronoun} {p} while {friend} {p2}.",
)
PLACE_ADJECTIVES = (
    "quiet", "crowded", "cold", "bright", "dusty", "beautiful", "strange", "calm", "noisy",
    "green", "empty", "warm", "old", "small",
)
PRONOUNS = ("she", "he")

# --- records ------------------------------------------------------------------------------------

BOOK_ADJECTIVES = (
    "Quiet", "Silent", "Northern", "Distant", "Hidden", "Last", "Salt", "Winter", "Glass",
    "Paper", "Golden", "Burning", "Lost", "Little", "Broken", "Summer",
)
BOOK_NOUNS = (
    "Harbour", "Garden", "River", "Orchard", "Lantern", "Island", "Letters", "Road", "House",
    "Mountain", "Kingdom", "Sea", "Station", "Promise", "Forest", "Bridge",
)
PRODUCTS = (
    "lamp", "kettle", "chair", "notebook", "backpack", "teapot", "umbrella", "blanket",
    "desk", "mirror", "bicycle bell", "frying pan", "pillow", "watering can", "clock",
)
WAREHOUSES = ("north", "south", "east", "west", "central", "harbour")
