"""Reading tasks: natural text with facts placed at chosen depths, then a question and its answer.

Every task is one document in the embedded model's answer format (its model card documents it):

    <document>\n\nQuestion: <question>\nAnswer: <answer>\n

The document is natural text (paragraphs of corpus documents) into which generated sentences are
placed at depths in [0, 1] of its length. The kinds of task:

    single    one fact (a number, a name, a place, a date) somewhere in the text, asked
    multi     several facts of one relation, one of them asked (the others are distractors)
    two       a question whose answer needs two facts: both values ("A and B"), or a chain
              (X lives in T; the mayor of T is Y; who is the mayor of the town where X lives?)
    story     a short narrative of who did what and how many, spread through the text; asked who, how
              many or where; the answer is a span of the story's own sentences. Training stories combine
              verbs, nouns and places freely (STORY_VERBS, STORY_NOUNS, STORY_PLACES and places composed
              from them, STORY_TIMES), so only reading answers them; held-out stories keep the fixed actions
              of STORY_ACTS
    quote     a passage of the natural text itself, asked what follows it (a span of that text)

Phrasing varies: every relation has several fact and question templates (and, for training
only, MORE_PHRASINGS, VARIED_PHRASINGS and TRAIN_RELATIONS), names, places and objects come from
pools, names, places and pets are also made up from syllables (coin), and values (numbers, dates,
counts in words or digits) are drawn at random. Training facts and questions of kinds single, multi and two are mostly
composed from parts (PHRASEBOOKS, Composer: clause order, voice, relative clauses, appositions, clefts,
possessives, exclusivity, synonyms), never in a held-out template's wording (writes_heldout).

Held-out split. Every pool is divided once, by a stable hash of each item, into a training part and a
held-out part: fact templates, question templates, first names, surnames, places, objects, story
verbs, and every made-up name. `Pools(split="train")` draws only from training parts, `Pools(split="heldout")` only from
held-out parts, so evaluation asks with templates and about names that training never saw; its
natural text comes from the corpus's validation documents, which training never reads either.

Everything is seeded: `TaskMaker(texts, tokenizer, split, seed)` yields the same tasks for the same
seed. Lengths are in tokens of the given tokenizer (the document; the question adds ~15 more).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import random
import re
import string
from dataclasses import dataclass

ANSWER_PREFIX = "\n\nQuestion: "


def format_task(document: str, question: str, answer: str | None = None) -> str:
    """The one answer format. Without an answer: the prompt, ending in 'Answer:'."""
    prompt = f"{document}{ANSWER_PREFIX}{question}\nAnswer:"
    return prompt if answer is None else f"{prompt} {answer}\n"


def _words(text: str) -> list[str]:
    return [w.replace("_", " ") for w in text.split()]


def heldout(item: str, share: int = 5) -> bool:
    """Stable split: about 1 in `share` items is held out (md5, so it never changes between runs)."""
    return int(hashlib.md5(item.encode()).hexdigest(), 16) % share == 0


def split_pool(items: list[str], split: str) -> list[str]:
    part = [x for x in items if heldout(x) == (split == "heldout")]
    assert part, f"empty {split} part of a pool starting {items[:3]}"
    return part


def split_templates(templates: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(training, held-out) templates: about one in four held out, at least one on each side."""
    held = tuple(t for t in templates if heldout(t, 4)) or templates[-1:]
    train = tuple(t for t in templates if t not in held) or templates[:1]
    assert not set(train) & set(held) or len(templates) == 1, templates
    return train, held


FIRST = _words("""Ada Alma Amos Anya Arlo Astrid Aurel Beatrix Bram Bruno Cassia Cedric Clara Colm Dagny Dario
Delia Desmond Edda Edwin Elif Elsa Emeric Enzo Esme Ezra Fenna Felix Flora Gideon Greta Gus Hana Hale Hilde Hugo
Ida Igor Ines Ivo Jana Jasper Juno Kai Kasia Kirra Lars Leda Lena Linus Livia Lorcan Mabel Magnus Maren Milo Mira
Nadia Nell Nico Noor Odile Olin Oona Orla Otto Paz Petra Pim Quinn Rafe Rhea Rosa Rufus Runa Saba Silas Sven Tam
Tessa Theo Thora Ulla Una Uriel Vera Vito Wanda Wim Xena Yara Yusuf Zeno Zora Ansel Bettina Corin Dora Elio Farah
Gemma Halvard Isolde Joaquin Katya Leopold Marisol Nils Ottilie Perrin Ramona Sigrid Tobias Ursa Valentin Wilhelmina""")
SURNAMES = _words("""Abbot Ashdown Barrow Bellweather Birch Blackwood Brennan Carrow Castell Cobb Crane Dunmore Ellery
Fairweather Fenwick Finch Garrow Greaves Hallam Harker Holt Ingram Jessop Kettering Lark Lowell Marlow Merrow
Mosley Navarro Norrell Oakes Orme Pascoe Penhale Quarrie Ravel Redfern Rook Sallow Selby Thorne Tolliver Underhill
Vance Varga Wakefield Wren Yardley Zeller Alcott Brandt Calloway Delacroix Eberhardt Falk Gallo Haskins Ivers""")
PLACE_HEADS = _words("Ash Bel Brack Cal Dun Ebb Fal Glen Hart Kel Lin Mar Nor Oak Pen Quar Ros Sal Thorn Wex Alder "
                     "Bram Cray Dal Fern Gull Hollin Ivy Lark Merrow Nettle Orr Pike Rill Stow Tarn Vell Wick")
PLACE_TAILS = _words("bury ford mouth wick holm stead haven field bridge moor port ton dale combe ness wold")
THINGS = _words("door gate box safe locker chest vault cabinet drawer trunk cellar shed strongbox tin case "
                "hatch cupboard briefcase padlock desk")
COLOURS = _words("blue green red yellow black white silver golden orange purple brown grey copper crimson ivory "
                 "amber teal violet scarlet bronze")
JOBS = _words("baker carpenter pilot nurse teacher fisherman weaver potter blacksmith librarian surveyor chemist "
              "tailor glassblower cartographer beekeeper clockmaker ferryman miller printer shepherd stonemason "
              "violinist veterinarian architect")
ANIMALS = _words("dog cat horse parrot goat tortoise rabbit ferret donkey owl")
PET_NAMES = _words("Biscuit Pepper Sprocket Thistle Muffin Rascal Juniper Clover Pickle Bramble Socks Nutmeg Ziggy "
                   "Waffles Domino Cinder Maple Puddle Rocket Tansy")
FOODS = _words("soup cherries porridge lentils plums oysters dumplings pancakes figs turnips oatcakes herring")
ORGS = _words("the_Guild_of_Lamplighters the_Northern_Rail_Company the_Harbour_Trust the_Society_of_Mapmakers "
              "the_Silver_Mill the_River_Ferry_Company the_Old_Observatory the_Clockworks the_Saltworks "
              "the_Glass_Foundry the_Weavers'_Hall the_Lantern_Press the_Copper_Mine the_Seed_Bank")
FEATURES = _words("copper_mines windmills salt_marshes cherry_orchards stone_bridges clock_tower glass_works "
                  "horse_fair lighthouse oyster_beds paper_mills rope_walk spring_market tulip_fields")
MONTHS = _words("January February March April May June July August September October November December")
NUMBER_WORDS = _words("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
                      "sixteen seventeen eighteen nineteen")
TENS = _words("_ _ twenty thirty forty fifty sixty seventy eighty ninety")


ONSETS = _words("b c d f g h j k l m n p r s t v w z br dr st tr th sh")
VOWELS = _words("a e i o u a e i o ai ea")
CODAS = ["", "", "", "", "n", "r", "l", "s", "m", "th"]


def coin(rng: random.Random, split: str, syllables: tuple[int, int] = (2, 3), tail: str = "") -> str:
    """A made-up name ('Dravinor', 'Keltharsk'), drawn until it falls in `split`: the pools' lists are
    small enough to memorise, and names never seen before can only be copied from the document."""
    while True:
        n = rng.randint(*syllables)
        name = "".join(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS) for _ in range(n))
        name = name.capitalize() + tail
        if heldout(name) == (split == "heldout"):
            return name


# training multi tasks and stories told in one shared phrasing (all facts, or all events, alike), as held-out ones are
PARALLEL_SHARE = 0.5

# training multi tasks whose facts stand together, one after another, as prose lists them ("Lena lives in Ashford.
# Tobias Crane lives in Kelmouth. ..."): the studio's "several facts" sample does, and run 7, trained on facts
# scattered over the document only, answered that sample's first fact to every question about it
TOGETHER_SHARE = 0.3

# pools of quantities that prose also writes in words ('forty-two years old'); training facts sometimes do
SPELLED_POOLS = ("age", "metres", "price")

# training stories that also give one of their people, or that person's family, a number that answers nothing
# asked (STORY_ASIDES, FAMILY_ASIDES). The studio's story sample opens "For forty-one years the lighthouse ... was
# kept by the Marrow family" and asks how many tins Thomas Marrow carried ("forty-two"); runs 13 and 14, whose
# story accuracy rose, both answered "forty-one": a count has to be bound to its event, not to a name near it.
# The frames use no story verb or noun, so no story question can be answered by them.
ASIDE_SHARE = 0.4
STORY_ASIDES = (
    "{agent} was {count} years old that year.",
    "{agent} had {count} cousins and rarely saw any of them.",
    "By then {agent} had been in the same line of work for {count} years.",
    "It had been {count} years since {agent} first came to the place.",
    "Everyone knew that {agent} had lived there for {count} years.",
    "{agent} turned {count} that year, and nobody said a word about it.",
)
FAMILY_ASIDES = (
    "For {count} years the {surname} family had lived on the same street.",
    "The {surname} family had not missed a harvest in {count} years.",
    "There had been {surname}s in the parish for {count} years.",
)


def number_words(n: int) -> str:
    """English words for 0 <= n < 100 ('forty-two')."""
    if n < 20:
        return NUMBER_WORDS[n]
    tens, ones = divmod(n, 10)
    return TENS[tens] + ("" if ones == 0 else "-" + NUMBER_WORDS[ones])


# ----------------------------------------------------------------------------- relations

@dataclass(frozen=True)
class Relation:
    """Facts of one kind. Templates name their slots: {s} the subject, {v} the value; `pair` asks for two
    values at once ({s1}, {s2}), answered '<v1> and <v2>'."""
    name: str
    subject: str          # pool name the subject comes from (see Pools.draw)
    value: str            # pool name the value comes from
    facts: tuple[str, ...]
    questions: tuple[str, ...]
    pair: tuple[str, ...] = ()


RELATIONS = (
    Relation("code", "object", "code", (
        "The code for the {s} is {v}.", "The {s} opens with the code {v}.", "To open the {s}, enter {v}.",
        "Someone had written the combination of the {s} on a card: {v}.", "The {s} has the code {v}.",
        "Remember that the number that unlocks the {s} is {v}.", "The lock on the {s} was set to {v}.",
        "Only one number opens the {s}, and it is {v}."), (
        "What is the code for the {s}?", "Which number opens the {s}?", "What code unlocks the {s}?",
        "What do you enter to open the {s}?", "What is the combination of the {s}?",
        "The {s} opens with which code?"), (
        "What are the codes for the {s1} and the {s2}?", "Which numbers open the {s1} and the {s2}?")),
    Relation("born", "person", "place", (
        "{s} was born in {v}.", "{s} came into the world in the town of {v}.", "The birthplace of {s} is {v}.",
        "{s} was born and raised in {v}.", "Records show that {s} was born in {v}.",
        "{s} first saw the light of day in {v}."), (
        "Where was {s} born?", "What is the birthplace of {s}?", "In which town was {s} born?",
        "Which town is {s} from by birth?", "Where did {s} come into the world?"), (
        "Where were {s1} and {s2} born?", "What are the birthplaces of {s1} and {s2}?")),
    Relation("lives", "person", "place", (
        "{s} lives in {v}.", "These days {s} makes a home in {v}.", "{s} moved to {v} and lives there still.",
        "The home of {s} is in {v}.", "{s} has lived in {v} for many years."), (
        "Where does {s} live?", "In which town does {s} live?", "Where is the home of {s}?",
        "Which town does {s} live in?"), (
        "Where do {s1} and {s2} live?", "In which towns do {s1} and {s2} live?")),
    Relation("job", "person", "job", (
        "{s} works as a {v}.", "By trade, {s} is a {v}.", "{s} earns a living as a {v}.",
        "{s} has been a {v} for years.", "Everyone knows {s} as the town's {v}."), (
        "What does {s} do for a living?", "What is the job of {s}?", "What is {s}'s trade?",
        "What work does {s} do?"), (
        "What do {s1} and {s2} do for a living?", "What are the jobs of {s1} and {s2}?")),
    Relation("opened", "building", "date", (
        "The {s} opened on {v}.", "The {s} first opened its doors on {v}.", "On {v}, the {s} was opened.",
        "The {s} was opened to the public on {v}.", "It was on {v} that the {s} opened."), (
        "When did the {s} open?", "On what date did the {s} open?", "What day did the {s} open its doors?",
        "When was the {s} opened?")),
    Relation("owner", "vehicle", "person", (
        "The {s} belongs to {v}.", "The {s} is owned by {v}.", "{v} is the owner of the {s}.",
        "The {s} is the property of {v}.", "Nobody but {v} drives the {s}."), (
        "Who owns the {s}?", "Whose is the {s}?", "Who is the owner of the {s}?",
        "To whom does the {s} belong?")),
    Relation("pet", "person_animal", "pet", (
        "{s} has a {a} called {v}.", "The {a} of {s} is named {v}.", "{s} keeps a {a} named {v}.",
        "{s} named the {a} {v}."), (
        "What is the name of {s}'s {a}?", "What is the {a} of {s} called?", "What did {s} name the {a}?")),
    Relation("age", "person", "age", (
        "{s} is {v} years old.", "{s} turned {v} this spring.", "At {v} years of age, {s} still walks to work.",
        "{s} is now {v}."), (
        "How old is {s}?", "What is the age of {s}?", "How many years old is {s}?")),
    Relation("height", "tower", "metres", (
        "The {s} is {v} metres tall.", "The {s} rises {v} metres above the square.",
        "The {s} stands {v} metres high.", "At {v} metres, the {s} is the tallest thing for miles."), (
        "How tall is the {s}?", "How many metres high is the {s}?", "What is the height of the {s}?")),
    Relation("founder", "org", "person", (
        "{S} was founded by {v}.", "{v} founded {s}.", "It was {v} who started {s}.",
        "{S} owes its founding to {v}."), (
        "Who founded {s}?", "Who started {s}?", "Who was the founder of {s}?")),
    Relation("room", "person", "room", (
        "{s} is staying in room {v}.", "The key to room {v} was given to {s}.", "{s} sleeps in room {v}.",
        "Room {v} is the one {s} booked."), (
        "Which room is {s} staying in?", "What is the number of {s}'s room?", "In which room does {s} sleep?")),
    Relation("food", "person", "food", (
        "The favourite food of {s} is {v}.", "{s} likes {v} more than anything else.",
        "Given the choice, {s} always eats {v}.", "{s} would eat {v} every day."), (
        "What is the favourite food of {s}?", "What does {s} like to eat most?", "Which food does {s} love?")),
)

# More phrasings, for training only: added after the held-out split of the templates above was fixed
# (pyramid_core/assets/reading_eval.jsonl.gz), so they never move a held-out template into training. Relation name ->
# (facts, questions).
MORE_PHRASINGS = {
    "code": (("The {s}'s code is {v}.", "If you want to open the {s}, the code is {v}.", "{V} is the code of the {s}.",
              "The {s} is locked, and its code is {v}."),
             ("What is the {s}'s code?", "Which code opens the {s}?", "What number do you need for the {s}?",
              "What is the code of the {s}?")),
    "born": (("{s} is a native of {v}.", "{s} was born in the town of {v}.", "{V} is where {s} was born."),
             ("Where is {s} from?", "What town was {s} born in?", "Which town is the birthplace of {s}?")),
    "lives": (("{s} lives in the town of {v}.", "{s} now lives in {v}.", "{s}'s home is in {v}.", "{s} resides in {v}."),
              ("Where is {s}'s home?", "In what town does {s} live?", "Where does {s} reside?",
               "Where does {s} make a home?")),
    "job": (("{s} is a {v}.", "{s} works as the local {v}.", "{s} has worked as a {v} all along."),
            ("What does {s} do?", "What is {s}'s job?", "What does {s} work as?", "What is the occupation of {s}?")),
    "opened": (("The {s} was opened on {v}.", "The {s} opened its doors on {v}.", "{V} was the day the {s} opened."),
               ("On which day did the {s} open?", "What was the opening date of the {s}?",
                "When did the {s} first open?")),
    "owner": (("The owner of the {s} is {v}.", "{v} owns the {s}.", "The {s} is {v}'s."),
              ("Who is the {s}'s owner?", "Who does the {s} belong to?", "Which person owns the {s}?")),
    "pet": (("{s}'s {a} is called {v}.", "{s} owns a {a} named {v}.", "{V} is the name of the {a} that belongs to {s}."),
            ("What is {s}'s {a} called?", "What name did {s} give the {a}?", "What is the {a} of {s} named?")),
    "age": (("{s} is {v}.", "{s} has just turned {v}.", "The age of {s} is {v}."),
            ("What age is {s}?", "How old is {s} now?")),
    "height": (("The height of the {s} is {v} metres.", "The {s} reaches {v} metres."),
               ("How high is the {s}?", "How many metres tall is the {s}?", "What height is the {s}?")),
    "founder": (("{S} was started by {v}.", "The founder of {s} was {v}.", "{v} was the founder of {s}."),
                ("Who is the founder of {s}?", "By whom was {s} founded?")),
    "room": (("The room of {s} is number {v}.", "{s} has room {v}."),
             ("Which room does {s} have?", "What room is {s} in?", "Which room is {s}'s?")),
    "food": (("{s}'s favourite food is {v}.", "{s} loves {v}.", "Of all foods, {s} likes {v} best."),
             ("What food does {s} like best?", "What is {s}'s favourite food?", "What does {s} love to eat?")),
}

# A third set, for training only (added for the fifth run, after the evaluation set was fixed). The shipped
# model's held-out misses were phrasings that need an inference ("Nobody but Gemma drives the amber bicycle."
# asked "Who owns ...?"), so these state facts indirectly: by use, "the only one who", the passive, the value
# first, the fact inside a clause of a longer sentence; the questions use synonyms of the relation's verb.
# The held-out constructions themselves ("Nobody but ...") are left out so that the evaluation still tests them.
VARIED_PHRASINGS = {
    "code": (("Whoever wants the {s} open has to key in {v}.", "{V} is the number that opens the {s}.",
              "The {s}, whose code is {v}, stood in the corner.", "Without the code {v}, nobody can open the {s}.",
              "The code {v} was chosen for the {s} years ago.", "She typed {v}, and the {s} swung open.",
              "The only number the {s} accepts is {v}.", "Inside the lid, the code for the {s} was written: {v}."),
             ("What number unlocks the {s}?", "What must you type to open the {s}?", "Which combination opens the {s}?",
              "What is the number for the {s}?", "The {s} needs which code?")),
    "born": (("It was in {v} that {s} was born.", "{s}, who was born in {v}, spoke with a soft accent.",
              "The parish register of {v} records the birth of {s}.", "{s} was a child of {v}, born there in a hard winter.",
              "In {v}, where {s} was born, the streets are narrow.", "{s} was born at the edge of {v}.",
              "{V} is the town where {s} was born."),
             ("Where is the birthplace of {s}?", "Which town was {s} born in?", "What town is {s} a native of?",
              "Where does {s} come from?", "In what place was {s} born?")),
    "lives": (("{s} keeps a small house in {v}.", "Every evening {s} walks home through the streets of {v}.",
               "{V} is home to {s}.", "{s}, who lives in {v}, came by train.", "A letter addressed to {s} in {v} arrived on Monday.",
               "{s} settled in {v} and never left.", "In {v}, {s} rents two rooms above a shop."),
              ("Which town is home to {s}?", "Where is {s} living?", "In what town does {s} have a home?",
               "Where has {s} settled?", "Where does {s} have a house?")),
    "job": (("{s} spends every working day as a {v}.", "As a {v}, {s} starts work early.",
             "{s}, a {v} by profession, lives alone.", "The town's only {v} is {s}.",
             "{s} trained as a {v} and still does that work.", "If you need a {v}, ask {s}.", "{s} makes a living as a {v}."),
            ("What is the profession of {s}?", "What does {s} do for work?", "What is {s}'s line of work?",
             "How does {s} earn a living?", "What trade does {s} follow?")),
    "opened": (("The doors of the {s} first opened on {v}.", "Since {v}, the {s} has been open to all.",
                "The {s}, opened on {v}, is still busy.", "{V} saw the opening of the {s}.",
                "The ribbon at the {s} was cut on {v}.", "On {v} the {s} welcomed its first visitors.",
                "The opening of the {s} took place on {v}."),
               ("When did the {s} first open its doors?", "What was the date of the opening of the {s}?",
                "On what day was the {s} opened?", "Since when has the {s} been open?", "When was the opening of the {s}?")),
    "owner": (("Only {v} ever rides the {s}.", "{v} is the only one who drives the {s}.",
               "Each morning {v} takes the {s} out of the shed and drives it to work.", "The {s} was bought by {v} last year.",
               "No one else may touch the {s}; it is {v}'s.", "{v} keeps the {s} polished and never lends it.",
               "The {s}, which {v} bought new, stands by the gate.", "Everyone in the street knows the {s} as {v}'s.",
               "The keys to the {s} hang in the kitchen of {v}."),
              ("Who has the {s}?", "Which person does the {s} belong to?", "Who possesses the {s}?",
               "Who is the {s} owned by?", "Whose property is the {s}?")),
    "pet": (("{s} takes a {a} called {v} everywhere.", "{V}, the {a} of {s}, sleeps by the fire.",
             "Every morning {s} feeds a {a} named {v}.", "The {a} that {s} keeps answers to the name {v}.",
             "{s} calls the {a} {v}.", "A {a} named {v} was given to {s} as a gift.", "The only {a} {s} owns is {v}."),
            ("What is the name of the {a} that belongs to {s}?", "What does {s} call the {a}?",
             "What is the {a} owned by {s} called?", "What name does the {a} of {s} answer to?")),
    "age": (("{s}, aged {v}, lives alone.", "At the age of {v}, {s} still rows across the bay.",
             "Born {v} years ago, {s} remembers the old mill.", "{V} years have passed since {s} was born.",
             "{s} is a {v}-year-old."),
            ("What age is {s} now?", "How many years has {s} lived?", "What is {s}'s age?", "How old is {s} these days?")),
    "height": (("From the foot of the {s} to its top is {v} metres.", "{V} metres is the height of the {s}.",
                "The {s}, {v} metres tall, can be seen from the sea.", "The {s} was built {v} metres high.",
                "Climbing the {s} means going up {v} metres.", "The {s} measures {v} metres from base to top."),
               ("What is the height of the {s} in metres?", "How high does the {s} rise?",
                "How many metres does the {s} measure?", "How tall does the {s} stand?")),
    "founder": (("{S} was set up by {v}.", "{v} set up {s} with borrowed money.",
                 "{S}, which {v} founded, still meets every week.", "The first head of {s}, and its founder, was {v}.",
                 "{v} is remembered as the founder of {s}.", "{S} was established by {v}."),
                ("Who set up {s}?", "Who established {s}?", "Whom does {s} owe its founding to?",
                 "Who is remembered as the founder of {s}?")),
    "room": (("{s} has the key to room {v}.", "Room {v} was booked for {s}.", "{s} went up to room {v} and locked the door.",
              "The only guest in room {v} is {s}.", "{s}, in room {v}, asked for more towels.", "{s} is lodging in room {v}."),
             ("What room is {s} staying in?", "Which room was booked for {s}?", "In which room is {s} lodging?",
              "What is {s}'s room number?")),
    "food": (("Nothing pleases {s} more than a plate of {v}.", "{s} always orders {v} at the inn.",
              "{s}, who loves {v}, eats early.", "The dish {s} likes most is {v}.", "Of everything on the menu, {s} picks {v}."),
             ("What food does {s} like most?", "What does {s} like to eat best?", "What dish does {s} prefer?",
              "What is {s}'s favourite thing to eat?")),
}

INSTRUMENTS = _words("fiddle cello flute harp trumpet accordion oboe drum bassoon clarinet lute banjo piano organ "
                     "trombone")

# Relations that only training sees (the evaluation set's draws over RELATIONS must not change).
TRAIN_RELATIONS = (
    Relation("instrument", "person", "instrument", (
        "{s} plays the {v}.", "{s} has played the {v} since childhood.", "In the band, {s} is on the {v}.",
        "The {v} is the instrument of {s}.", "Every night {s} practises the {v}.",
        "{s}, who plays the {v}, joined the band last year.", "The only {v} player in town is {s}.",
        "The {v} was taught to {s} by an uncle."), (
        "What instrument does {s} play?", "Which instrument is {s}'s?", "What does {s} play in the band?",
        "Which instrument does {s} practise?"), (
        "What instruments do {s1} and {s2} play?",)),
    Relation("sister", "person", "person", (
        "{s}'s sister is {v}.", "{v} is the sister of {s}.", "{s} has one sister, {v}.",
        "{s} writes every week to a sister named {v}.", "The sister of {s}, {v}, lives abroad.",
        "{s} grew up with a sister called {v}."), (
        "Who is {s}'s sister?", "What is the name of {s}'s sister?", "Who is the sister of {s}?",
        "What is {s}'s sister called?")),
    Relation("ferry", "place", "time", (
        "The ferry to {s} leaves at {v}.", "The last boat for {s} sails at {v}.", "At {v} the ferry departs for {s}.",
        "The {s} ferry, which leaves at {v}, is always full.", "The only ferry to {s} goes at {v}.",
        "A ferry sails for {s} every day at {v}."), (
        "When does the ferry to {s} leave?", "At what time does the ferry for {s} depart?",
        "What time does the boat to {s} sail?")),
    Relation("price", "object", "price", (
        "The {s} costs {v} pounds.", "The {s} was sold for {v} pounds.", "{V} pounds buys the {s}.",
        "The price of the {s} is {v} pounds.", "The {s}, priced at {v} pounds, sits in the window.",
        "For {v} pounds, the {s} can be yours."), (
        "How much does the {s} cost?", "What is the price of the {s}?", "How many pounds is the {s}?",
        "What does the {s} sell for?"), (
        "What do the {s1} and the {s2} cost?",)),
    Relation("teacher", "person", "person", (
        "{v} taught {s} to read.", "{s} learned to read from {v}.", "The teacher of {s} was {v}.",
        "{s} was taught by {v}.", "{s} owes everything to a teacher, {v}.", "As a child, {s} had lessons with {v}."), (
        "Who taught {s}?", "Who was {s}'s teacher?", "From whom did {s} learn to read?", "Who gave {s} lessons?")),
)

# chains: the answer needs a bridge fact, then a second fact about the bridge value
CHAINS = (  # (relation of the bridge fact, second fact about the bridge {b}, question, pool of the answer)
    ("lives", "The mayor of {b} is {v}.", "Who is the mayor of the town where {s} lives?", "person"),
    ("born", "{B} is famous for its {v}.", "What is the birthplace of {s} famous for?", "feature"),
    ("owner", "{B} works as a {v}.", "What does the owner of the {s} do for a living?", "job"),
    ("lives", "The town of {b} has {v} bakeries.", "How many bakeries are there in the town where {s} lives?", "age"),
)

# chains only training sees
MORE_CHAINS = (
    ("owner", "{B} lives in {v}.", "In which town does the owner of the {s} live?", "place"),
    ("born", "The mayor of {b} is {v}.", "Who is the mayor of the town where {s} was born?", "person"),
    ("lives", "The ferry to {b} leaves at {v}.", "When does the ferry to the town where {s} lives leave?", "time"),
    ("sister", "{B} plays the {v}.", "What instrument does the sister of {s} play?", "instrument"),
)

# ----------------------------------------------------------------------------- stories

# (past tense, base form, count noun, place phrase[, past participle where it is not the past tense]):
# "Ellen carried forty-two tins of oil up the tower stairs."
STORY_ACTS = [tuple(a.split("|")) for a in """carried|carry|tins of oil|up the tower stairs
planted|plant|hawthorn trees|along the village path
caught|catch|mackerel|off the north pier
baked|bake|loaves of bread|for the harvest fair
painted|paint|rowing boats|in the boatyard
counted|count|white herons|on the north cliff
sold|sell|baskets of apples|at the Saturday market
mended|mend|fishing nets|on the harbour wall
repaired|repair|clocks|in the back room of the shop
copied|copy|letters|for the parish records
lit|light|lanterns|along the quay
gathered|gather|eggs|from the hen house
stitched|stitch|sails|in the loft above the chandlery
carved|carve|wooden spoons|by the kitchen fire
delivered|deliver|parcels|to the farms beyond the river
rescued|rescue|sailors|from the wreck of the Patience
built|build|stone walls|around the upper pasture
tuned|tune|pianos|at the music school
polished|polish|brass lamps|in the lamp room
read|read|books|in the reading room of the library
milked|milk|goats|before dawn
harvested|harvest|sacks of barley|from the east field
shod|shoe|horses|at the forge|shod
printed|print|posters|for the spring election
washed|wash|windows|in the town hall
stacked|stack|crates of salt|in the warehouse
fed|feed|stray cats|behind the bakery
wrote|write|poems|in a green notebook|written
collected|collect|sea shells|on the south beach
rang|ring|church bells|for the wedding|rung
sewed|sew|quilts|for the orphanage|sewn
climbed|climb|mountains|in the high valleys
trained|train|sheepdogs|on the hill farm
drew|draw|maps|of the coastline|drawn
brewed|brew|barrels of cider|in the old barn
cleaned|clean|chimneys|on Market Street""".strip().split("\n")]
STORY_OPENERS = ("In the spring, ", "That winter, ", "On the third morning, ", "Later that year, ", "", "",
                 "Before the storm, ", "After the fair, ", "Every Sunday, ", "One evening, ")
STORY_QUESTIONS = {  # kind -> templates over {agent} {past} {base} {noun} {place}
    "who": ("Who {past} the {noun}?", "Which person {past} the {noun}?", "Who was it that {past} the {noun}?",
            "Who {past} {noun} {place}?"),
    "count": ("How many {noun} did {agent} {base}?", "How many {noun} were {past_passive} by {agent}?",
              "What number of {noun} did {agent} {base}?"),
    "where": ("Where did {agent} {base} the {noun}?", "Where were the {noun} {past_passive}?"),
}


# More of each for training only; every new action's past tense falls in the training part of the split.
MORE_STORY_ACTS = [tuple(a.split("|")) for a in """picked|pick|baskets of pears|in the walled orchard
loaded|load|sacks of coal|onto the barge
wove|weave|blankets|on the big loom|woven
whittled|whittle|walking sticks|at the back of the inn
herded|herd|geese|across the common
fetched|fetch|buckets of water|from the village well
ground|grind|sacks of wheat|at the water mill
rowed|row|passengers|across the estuary
sorted|sort|letters|at the post office
groomed|groom|ponies|in the stable yard
bound|bind|books|in the bindery
chopped|chop|logs|for the school stove
boiled|boil|kettles of water|in the laundry
framed|frame|pictures|in the studio on Bridge Street
pressed|press|apples|at the cider mill
smoked|smoke|kippers|in the shed by the shore
shelled|shell|peas|on the back step
knitted|knit|scarves|for the fishermen""".strip().split("\n")]
MORE_STORY_OPENERS = ("By noon, ", "On the last day of the fair, ", "During the flood, ", "Last autumn, ",
                      "Early on Monday, ", "Without a word to anyone, ", "For the first time, ")
# sentence shapes of one event, over {opener} {agent} {past} {count} {noun} {place} {past_passive}
STORY_SHAPES = ("{opener}{agent} {past} {count} {noun} {place}.",)
MORE_STORY_SHAPES = (
    "{opener}it was {agent} who {past} {count} {noun} {place}.",
    "{opener}a total of {count} {noun} were {past_passive} {place} by {agent}.",
    "In all, {count} {noun} were {past_passive} by {agent} {place}.",
    "{agent}, who {past} {count} {noun} {place}, was tired by evening.",
    "{opener}{agent} went out and {past} {count} {noun} {place}.",
    "Only {agent} {past} {noun} {place}, and there were {count} of them.",
)
MORE_STORY_QUESTIONS = {
    "who": ("Who was the one who {past} the {noun}?", "Name the person who {past} the {noun}.",
            "Which of them {past} the {noun}?", "By whom were the {noun} {past_passive}?"),
    "count": ("How many {noun} did {agent} {base} {place}?", "What was the number of {noun} that {agent} {past}?",
              "{agent} {past} how many {noun}?"),
    "where": ("In what place did {agent} {base} the {noun}?", "Where were the {noun} that {agent} {past}?"),
    "what": ("What did {agent} {base} {place}?", "What did {agent} {base}?", "What was it that {agent} {past}?"),
    # only lexicon stories ask it: their place slot may hold a time phrase (STORY_TIMES)
    "when": ("When did {agent} {base} the {noun}?", "When were the {noun} {past_passive}?",
             "At what time did {agent} {base} {count} {noun}?"),
}
STORY_ASKS = tuple(dict.fromkeys([*STORY_QUESTIONS, *MORE_STORY_QUESTIONS]))  # what a story question asks


def event_sentence(shape: str, **slots: str) -> str:
    """One story event in `shape`, capitalised; a shape never starts with a slot the answer copies
    (a count or place capitalised at the start would no longer be the answer's span)."""
    s = shape.format(**slots)
    return s[0].upper() + s[1:]


# two adjacent events of one agent in one sentence (lexicon stories only)
JOINED_SHAPES = ("{opener}{agent} {past} {count} {noun} {place}, and then {past2} {count2} {noun2} {place2}.",
                 "{opener}{agent} {past} {count} {noun} {place} and {past2} {count2} {noun2} {place2}.")


# ----------------------------------------------------------------------------- training stories from a lexicon

# The fixed actions above bundle verb, noun and place, so a model can answer a story question from the frame it
# memorised ("milked ... goats" -> whoever it last saw milking) instead of from the document: on 2026-11-30 the 25M
# model answered story questions over training actions 70% right and over held-out actions 30%. Training stories
# are therefore built from independent parts: any verb, any noun of a category the verb takes, any place or time.
# Nothing here is reachable from the held-out split (its stories keep STORY_ACTS' held-out part), and none of the
# held-out actions' verbs, nouns or places is in these lists (a test checks it).

@dataclass(frozen=True)
class Verb:
    past: str
    base: str
    participle: str
    takes: tuple[str, ...]   # noun categories that make sense as its object


def _verbs(text: str) -> tuple[Verb, ...]:
    """'past/base[/participle]:cat,cat' entries, '_' for a space; the participle defaults to the past tense."""
    out = []
    for entry in text.split():
        forms, cats = entry.split(":")
        past, base, *participle = forms.replace("_", " ").split("/")
        out.append(Verb(past, base, (participle or [past])[0], tuple(cats.split(","))))
    return tuple(out)


def _phrases(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.replace("\n", "|").split("|") if p.strip())


STORY_VERBS = _verbs("""
 carried/carry:goods,wood,crafts,machines,cloth,finds,food loaded/load:goods unloaded/unload:goods
sold/sell:goods,food,wood,crafts,plants,animals,machines,cloth,finds
bought/buy:goods,food,wood,crafts,plants,animals,machines,cloth stacked/stack:goods,wood,crafts,food
delivered/deliver:goods,food,texts,wood,crafts fetched/fetch:goods,animals,food hauled/haul:goods
packed/pack:goods,food,cloth,wood,crafts unpacked/unpack:goods,cloth,wood,crafts
weighed/weigh:goods,animals,finds,food stored/store:goods,food,machines,wood,crafts
labelled/label:goods,finds,plants hid/hide/hidden:goods,finds,texts,food found/find:finds,goods,texts,animals
lost/lose:finds,goods,texts,animals dropped/drop:goods,finds,food lifted/lift:goods,machines
dragged/drag:goods,wood,crafts wrapped/wrap:food,wood,crafts,goods,finds shipped/ship:goods,wood,crafts,machines
ordered/order:goods,wood,crafts,machines,food traded/trade:goods,finds,animals
borrowed/borrow:machines,wood,crafts,cloth lent/lend:machines,wood,crafts,cloth
returned/return:machines,wood,crafts,goods,texts stole/steal/stolen:goods,food,finds,animals
counted/count:goods,animals,finds,people,texts,plants sorted/sort:goods,finds,texts
moved/move:goods,wood,crafts,animals,machines brought/bring:goods,food,wood,crafts,people
took/take/taken:goods,food,finds,people sent/send:texts,goods received/receive:texts,goods
gave_away/give_away/given_away:goods,food,wood,crafts,cloth,finds
threw_away/throw_away/thrown_away:goods,food,texts,cloth kept/keep:finds,animals,texts gathered/gather:finds,people
collected/collect:finds,texts,goods donated/donate:goods,food,cloth,wood,crafts
auctioned/auction:goods,animals,wood,crafts,machines checked/check:goods,texts,machines marked/mark:goods,texts
piled/pile:goods,finds emptied/empty:goods spilled/spill:goods broke/break/broken:machines,wood,crafts,finds
swapped/swap:finds,texts inspected/inspect:goods,machines,animals baked/bake:food cooked/cook:food
ate/eat/eaten:food served/serve:food sliced/slice:food roasted/roast:food tasted/taste:food shared/share:food,finds
fried/fry:food froze/freeze/frozen:food warmed/warm:food burned/burn:food,texts iced/ice:food
decorated/decorate:food,wood,crafts cooled/cool:food made/make:wood,crafts,food,cloth carved/carve:wood
painted/paint:wood,crafts,machines mended/mend:wood,crafts,cloth,machines repaired/repair:wood,crafts,machines
sanded/sand:wood varnished/varnish:wood designed/design:wood,crafts,cloth glued/glue:wood,crafts
sketched/sketch:wood,crafts,plants,animals,people assembled/assemble:wood,crafts,machines
finished/finish:wood,crafts,cloth,texts gilded/gild:wood wove/weave/woven:cloth hung/hang:wood,crafts,cloth
photographed/photograph:wood,crafts,animals,plants,people whittled/whittle:wood displayed/display:wood,crafts,finds
polished/polish:wood,crafts,machines,finds planted/plant:plants watered/water:plants pruned/prune:plants
dug_up/dig_up:plants,finds grew/grow/grown:plants picked/pick:plants,finds trimmed/trim:plants potted/pot:plants
uprooted/uproot:plants transplanted/transplant:plants cut_down/cut_down:plants staked/stake:plants
sprayed/spray:plants tended/tend:plants,animals measured/measure:plants,wood,crafts,cloth herded/herd:animals
brushed/brush:animals washed/wash:animals,cloth,machines chased/chase:animals led/lead:animals,people
walked/walk:animals penned/pen:animals spotted/spot:animals,finds caught/catch:animals released/release:animals
rounded_up/round_up:animals,people tagged/tag:animals,goods bathed/bathe:animals raised/raise:animals,plants
bred/breed:animals exercised/exercise:animals watched/watch:animals,people drove/drive/driven:animals,people
housed/house:animals,people fattened/fatten:animals wrote/write/written:texts,songs read/read:texts
copied/copy:texts,songs signed/sign:texts posted/post:texts typed/type:texts translated/translate:texts,songs
printed/print:texts stamped/stamp:texts filed/file:texts answered/answer:texts edited/edit:texts
folded/fold:texts,cloth sealed/seal:texts,goods recited/recite:texts,songs composed/compose:texts,songs
memorised/memorise:texts,songs illustrated/illustrate:texts numbered/number:texts,goods
tore_up/tear_up/torn_up:texts dictated/dictate:texts handed_out/hand_out:texts,food pinned_up/pin_up:texts,cloth
sang/sing/sung:songs hummed/hum:songs played/play:songs rehearsed/rehearse:songs learned/learn:songs,texts
fixed/fix:machines,wood,crafts oiled/oil:machines cleaned/clean:machines,wood,crafts,finds tested/test:machines
dismantled/dismantle:machines tuned/tune:machines wound/wind:machines adjusted/adjust:machines
restored/restore:machines,wood,crafts serviced/service:machines greased/grease:machines installed/install:machines
replaced/replace:machines rewired/rewire:machines dusted/dust:machines,wood,crafts,finds greeted/greet:people
welcomed/welcome:people guided/guide:people taught/teach:people ferried/ferry:people,goods rowed/row:people
treated/treat:people,animals met/meet:people invited/invite:people interviewed/interview:people hired/hire:people
sheltered/shelter:people,animals thanked/thank:people warned/warn:people examined/examine:people,animals,finds
escorted/escort:people registered/register:people seated/seat:people entertained/entertain:people ironed/iron:cloth
sewed/sew/sewn:cloth knitted/knit:cloth dyed/dye:cloth hemmed/hem:cloth patched/patch:cloth hung_out/hang_out:cloth
darned/darn:cloth embroidered/embroider:cloth starched/starch:cloth aired/air:cloth tried_on/try_on:cloth
wore/wear/worn:cloth tore/tear/torn:cloth dried/dry:cloth buried/bury:finds picked_up/pick_up:finds,goods
strung/string:finds pocketed/pocket:finds scattered/scatter:finds lined_up/line_up:finds catalogued/catalogue:finds""")

STORY_NOUNS = {  # category -> plural countable nouns
    "goods": _words("""crates_of_onions sacks_of_flour barrels_of_tar jars_of_honey bales_of_hay boxes_of_nails
        coils_of_rope bundles_of_firewood tins_of_paint bottles_of_ink rolls_of_cloth bars_of_soap buckets_of_coal
        pots_of_glue sacks_of_potatoes cans_of_paraffin reels_of_thread bags_of_lime crates_of_lemons chests_of_tea"""),
    "food": _words("""rye_loaves meat_pies apple_tarts oatmeal_biscuits jars_of_jam fruit_cakes pots_of_soup sausages
        pasties currant_buns wheels_of_cheese bowls_of_stew plum_puddings gingerbread_men pork_pies scones
        doughnuts custard_tarts honey_cakes"""),
    "wood": _words("""wooden_chairs stools picture_frames bird_boxes toy_boats bookshelves wooden_bowls window_boxes
        garden_benches weathervanes puppets rocking_horses chess_sets broom_handles"""),
    "crafts": _words("kites wicker_baskets clay_pots candles doormats lampshades paper_lanterns"),
    "plants": _words("""apple_trees rose_bushes tulip_bulbs cabbages leeks sunflowers bean_plants oak_saplings
        lavender_bushes strawberry_plants pumpkins pots_of_basil grape_vines cherry_trees fir_trees marrows
        beech_hedges potted_ferns raspberry_canes"""),
    "animals": _words("""sheep hens ducks geese pigs ponies calves rabbits donkeys piglets lambs turkeys pigeons cows
        oxen alpacas bullocks"""),
    "texts": _words("""letters postcards invoices recipes poems notices reports telegrams receipts pamphlets
        shopping_lists birthday_cards petitions menus posters sermons diary_pages"""),
    "songs": _words("songs ballads hymns carols lullabies sea_shanties marches waltzes"),
    "machines": _words("""clocks bicycles radios sewing_machines typewriters lawnmowers kettles oil_lamps wheelbarrows
        pocket_watches music_boxes water_pumps gramophones door_locks stoves telescopes barometers mangles"""),
    "people": _words("""visitors pupils passengers tourists patients guests apprentices choir_singers volunteers
        travellers schoolchildren pilgrims cyclists hikers newcomers"""),
    "cloth": _words("""shirts woollen_coats bedsheets curtains scarves aprons tablecloths socks blankets hats gloves
        handkerchiefs cushions banners flags pillowcases waistcoats"""),
    "finds": _words("""pebbles fossils old_coins keys buttons feathers acorns pine_cones marbles arrowheads bottle_caps
        glass_beads conkers postage_stamps"""),
}

# where an event happened (asked "where") ...
STORY_PLACES = _phrases("""in the boathouse | at the fish market | by the mill pond | in the churchyard
| on the village green | behind the school | in the walled garden | at the railway station | in the cellar of the inn
| on the quayside | under the old bridge | in the attic | in the back kitchen | at the crossroads | by the lighthouse
| in the orchard | on the riverbank | in the greenhouse | in the town square | in the parish hall
| outside the post office | in the stable loft | by the south gate | on the ferry deck | in the cow shed
| at the sawmill | in the schoolroom | on the hillside | along the canal | in the potting shed | at the corner shop
| in the customs house | by the duck pond | near the tannery | at the brewery | in the courtyard | on the west road
| in the hospital garden | at the bus stop | in the museum basement | behind the chapel | on the rooftop
| in the toll house | by the harbour steps | at the cattle market | in the vicarage garden | in the library annex
| on the tram platform | at the printing works | in the watchmaker's shop | along the sea wall | in the dye works
| at the ice house | in the glasshouse | by the weir | in the shipyard | on the jetty | in the old quarry
| at the signal box | in the mill yard | in the hay loft | in the workshop | at the ferry landing | on the allotments
| in the kitchen garden | in the tea room | beside the fountain | at the county show | in the lane behind the church
| on the bowling green | at the timber yard | in the boiler room | in the coach house | on the mudflats
| among the dunes | in the pine wood | by the bandstand | at the lock gates | in the rectory | on the footbridge
| at the market cross | in the laundry yard | in the summer house | in the guildhall | at the bottom of the garden
| on the promenade | in the pump room | at the level crossing | in the almshouses | by the old windmill
| in the barn loft | beside the railway line | in the counting house | under the market arches | on the island
| at the campsite | inside the stone circle | in the grammar school | by the cattle grid | at the harbour office
| in the gatekeeper's lodge | in the coal yard | on the towpath | in the cloakroom | at the skating pond
| in the police station | behind the town hall | in the hotel kitchen""")
# ... and when (asked "when"; never asked "where", which would teach that "where" means the last phrase)
STORY_TIMES = _phrases("""last Tuesday | on Midsummer Eve | before breakfast | after supper | in the first week of May
| during the long frost | on New Year's Day | at midnight | on the morning of the regatta | after the funeral
| during the school holidays | on market day | in the week before Easter | at the end of the summer | over the winter
| on a wet Thursday | during the eclipse | on the eve of the election | over three nights | the day after the flood
| in the autumn term | on the coldest day of the year | at noon on Sunday | in the spring of that year
| just before closing time""")


# ... and places composed from parts of those: run 6 answered 11 of the 25 held-out "where" questions with a place of
# the list above that was not in the document ("on the hillside" for "on the hill farm"): it had memorised the 108
# places instead of copying them. A preposition, a place noun of the list and sometimes a second place ('in the attic
# above the tea room', as held-out "in the loft above the chandlery") make about a million phrases, which can only
# be copied. The prepositions include ones the list lacks ('from', 'around'); no held-out place's head word is added.
PLACE_PREPS = ("in", "at", "by", "on", "behind", "near", "beside", "outside", "from", "around", "beyond", "past",
               "across", "under")
PLACE_LINKS = ("above", "behind", "beside", "near", "opposite", "next to", "beyond", "below", "across from")
PLACE_NOUNS = tuple(sorted({p.split(" the ", 1)[1] for p in STORY_PLACES if " the " in p}))


def composed_place(rng: random.Random) -> str:
    """'{prep} the {noun}', or that followed by '{link} the {noun}' (a place by another place)."""
    place = f"{rng.choice(PLACE_PREPS)} the {rng.choice(PLACE_NOUNS)}"
    if rng.random() < 0.5:
        place += f" {rng.choice(PLACE_LINKS)} the {rng.choice(PLACE_NOUNS)}"
    return place


def _nouns_to_verbs() -> dict[str, tuple[Verb, ...]]:
    """noun -> the verbs that take it (for events that share a noun but not a verb)."""
    return {noun: tuple(v for v in STORY_VERBS if cat in v.takes)
            for cat, nouns in STORY_NOUNS.items() for noun in nouns}


VERBS_OF_NOUN = _nouns_to_verbs()


# Made-up verbs and nouns for training stories (TaskMaker(story_coined=...)), built on the guess that run 19's model,
# answering "who" over training stories far better than over held-out ones, had learned the lexicon's ~200 verbs and
# ~200 nouns one by one. The guess was wrong: that model answers made-up words as well as known ones, and run 20
# (a third of the words made up) lost ground (benchmarks/reading_who_gap.md, reading_run20_gpu.md). Kept so that
# run 20 can be reproduced. Coined words fall in the training split and never spell a held-out action's word.
COINED_CONTAINERS = _words("crates sacks barrels jars boxes bundles tins bottles rolls bags baskets")
HELDOUT_STORY_WORDS = frozenset(w for a in STORY_ACTS if heldout(a[0]) for part in a for w in part.split())


def coined_word(rng: random.Random, syllables: tuple[int, int] = (1, 2)) -> str:
    """A lower-case made-up word of the training split, ending in a consonant so that suffixes read as English."""
    while True:
        word = coin(rng, "train", syllables).lower()
        word += "" if word[-1] not in "aeiou" else rng.choice("nrlmst")
        if not heldout(word.capitalize()) and word not in HELDOUT_STORY_WORDS:
            return word


def coined_verb(rng: random.Random) -> Verb:
    """A regular verb of a made-up stem ('drel': 'dreled'); it takes a noun of any category."""
    base = coined_word(rng)
    return Verb(base + "ed", base, base + "ed", tuple(STORY_NOUNS))


def coined_noun(rng: random.Random) -> str:
    """A made-up plural ('drelks'), sometimes counted in a real container ('sacks of drelks')."""
    noun = coined_word(rng) + "s"
    return f"{rng.choice(COINED_CONTAINERS)} of {noun}" if rng.random() < 0.3 else noun


@dataclass(frozen=True)
class Event:
    agent: str
    verb: Verb
    noun: str
    place: str
    count: str

    @property
    def when(self) -> bool:   # the place slot holds a time phrase
        return self.place in STORY_TIMES

    def slots(self) -> dict[str, str]:
        v = self.verb
        return dict(agent=self.agent, past=v.past, base=v.base, past_passive=v.participle, noun=self.noun,
                    place=self.place, count=self.count)


# ----------------------------------------------------------------------------- training facts from parts

# On 2026-11-30 the newest model's misses on held-out single facts were mostly phrasing and span errors, not lost
# facts: "Mira Barrow named the donkey Clover." asked "What did Mira Barrow name the donkey?" got "the donkey Clover",
# and "Nobody but Gemma drives the amber bicycle." asked "Who owns ...?" got "Nobody". A few fixed templates per
# relation teach their own wording; so training facts and questions are composed from independent parts (clause
# order, voice, relative clause, apposition, cleft, possessive, exclusivity, synonyms, adverbials), always answered
# by the bare value. A composed sentence that contains a held-out template's wording is drawn again
# (`writes_heldout`), so evaluation keeps asking in phrasings that training never wrote. Run 10 still answered the
# held-out "named the ferret Maple" with "the ferret" (11 of its 47 single-fact misses): its training had one verb
# of that shape ("called the ferret Maple"), so pets are now also "dubbed" and "christened", and asked so; and it
# answered "in the town of Thenton" for "Thenton" (3 misses), so composed places are also "in the town of {v}".

def expand(pattern: str) -> tuple[str, ...]:
    """Every reading of a pattern with alternatives: '[lives|resides] in {v}' -> ('lives in {v}', 'resides in {v}');
    ';' separates patterns, and an empty alternative makes a part optional ('[still |]lives')."""
    out = []
    for part in (p.strip() for p in pattern.split(";") if p.strip()):
        m = re.search(r"\[([^\[\]]*)\]", part)
        if not m:
            out.append(re.sub(r"\s+", " ", part).replace(" ,", ","))
            continue
        for alt in m.group(1).split("|"):
            out += expand(part[:m.start()] + alt + part[m.end():])
    return tuple(out)


@dataclass(frozen=True)
class Phrasebook:
    """The parts one relation's training facts and questions are composed from (patterns for `expand`).
    {s} is the subject, {v} the value, {a} the animal of a pet; the value never opens a sentence unless
    `value_opens` (a lower-case job or food would lose its case, and with it the answer's span)."""
    subject: str              # the subject as a noun phrase: '{s}', 'the {s}', 'the [ferry|boat] to {s}'
    kind: str                 # what the subject is: person, thing, place (for 'who'/'which' and the tails)
    value_kind: str           # what the value is: person, place, pet, other
    vps: str                  # finite verb phrases of the subject, with {v}: 'lives in {v}'
    nouns: str                # noun phrases naming the value: 'the home town of {s}' -> '... is {v}'
    asks: str                 # direct questions without '?': '[Where|In which town] does {s} reside'
    embedded: str             # indirect questions: 'where {s} lives' -> 'Tell me where {s} lives.'
    value_vps: str = ""       # verb phrases of the value: 'owns the {s}' -> '{v} owns the {s}.'
    exclusive_vps: str = ""   # only with 'no one except {v}' and the like: 'drives the {s}'
    appositions: str = ""     # a subject with the fact in apposition: '{s}, a resident of {v},'
    copulas: str = "is"       # '{noun} is {v}'; 'is called' for names
    unit: str = ""            # after the value where a noun names it: ' metres'
    value_opens: bool = True


PHRASEBOOKS = {
    "code": Phrasebook(
        "the {s}", "thing", "other",
        vps="[opens|unlocks|can be opened] with the [number|combination] {v}; [is locked with|is set to|takes|needs] "
            "[the code|the combination|the number] {v}; will only open for {v}",
        nouns="the [code|combination|lock code|number] [of|for] the {s}; the {s}'s [code|combination]; "
              "the number that [opens|unlocks] the {s}",
        asks="[What|Which] [code|number|combination] [opens|unlocks] the {s}; What [number|code] does the {s} "
             "[take|need|open with]; What do you [type|key in|dial] to [open|unlock] the {s}",
        embedded="[what|which] [code|number] [opens|unlocks] the {s}; what you [type|key in] to open the {s}",
        value_vps="[opens|unlocks] the {s}; is [what|the number that] opens the {s}",
        appositions="the {s}, [code|combination] {v},"),
    "born": Phrasebook(
        "{s}", "person", "place",
        vps="is a native of {v}; [comes|hails] from {v}; [first drew breath|entered the world] in [the town of |]{v}; "
            "was born [and raised|and bred] in [the village of |]{v}",
        nouns="the [birthplace|place of birth|native town] of {s}; {s}'s [birthplace|place of birth|native town]; "
              "the town where {s} was born",
        asks="[Where|In what town|In which place] [was {s} born|did {s} first draw breath]; [Which|What] town "
             "[is {s} a native of|does {s} come from|was {s} born in]; Where does {s} [come|hail] from",
        embedded="[where|in which town|in what place] {s} was born; [which|what] town {s} [comes from|is a native of]",
        value_vps="is [where|the town where] {s} was born; saw the birth of {s}",
        appositions="{s}, [a native of|born in|from] {v},"),
    "lives": Phrasebook(
        "{s}", "person", "place",
        vps="[lives|resides|keeps a house|rents rooms|makes a home|is living] in [the town of |]{v}; "
            "[settled|ended up] in [the village of |]{v}; "
            "calls {v} home; has an address in {v}",
        nouns="the [home|town of residence|present home] of {s}; {s}'s [home town|place of residence]; "
              "the town where {s} lives",
        asks="[Where|In which town|In what town] [does {s} [reside|have a home|keep a house]|is {s} living]; "
             "[Which|What] town [is home to {s}|does {s} call home|is {s} living in]; Where has {s} settled",
        embedded="[where|in which town] {s} [lives|resides|is living]; which town {s} calls home",
        value_vps="is home to {s}; is [where|the town where] {s} lives",
        appositions="{s}, [a resident of|a householder in|now of] {v},"),
    "job": Phrasebook(
        "{s}", "person", "other",
        vps="[works|earns a living|makes a living|is employed] as a {v}; [is|has been|trained as] a {v}; "
            "is a {v} by [trade|profession]",
        nouns="the [job|trade|profession|occupation] of {s}; {s}'s [job|trade|profession|occupation|line of work]",
        asks="What [does {s} do for [a living|work]|is {s}'s [job|trade|profession]|kind of work does {s} do|"
             "does {s} work as|is the occupation of {s}]; How does {s} [earn|make] a living",
        embedded="what {s} does for a living; what [job|trade|kind of work] {s} [has|follows]",
        appositions="{s}, a {v} by [trade|profession],; {s}, the local {v},",
        value_opens=False),
    "opened": Phrasebook(
        "the {s}", "thing", "other",
        vps="[first opened|opened its doors|was opened to the public|welcomed its first visitors] on {v}; "
            "has been open since {v}",
        nouns="the [opening date|date of opening|opening day] of the {s}; the day the {s} [opened|first opened]",
        asks="[When|On what date|On which day] did the {s} [open|first open|open its doors|welcome its first visitors]; "
             "[When|On what date] was the {s} opened to the public; Since when has the {s} been open",
        embedded="[when|on what date] the {s} [opened|first opened|opened its doors]",
        value_vps="saw the opening of the {s}; was the day the {s} opened",
        appositions="the {s}, [opened|first opened] on {v},"),
    "owner": Phrasebook(
        "the {s}", "thing", "person",
        vps="[has belonged|has always belonged] to {v}; is owned by {v}; is the property of {v}; was bought by {v}; "
            "is [driven|ridden|used] only by {v}; is {v}'s",
        nouns="the [owner|keeper] of the {s}; the {s}'s owner; the person who owns the {s}",
        asks="[Who|Which person] [has|possesses|bought] the {s}; Who is the [owner|keeper] of the {s}; "
             "[Who does the {s} belong to|To whom does the {s} belong|Who is the {s} owned by|Whose is the {s}]",
        embedded="who [owns|has] the {s}; who the {s} belongs to; whose the {s} is",
        value_vps="owns the {s}; bought the {s} [new|last year|second-hand]; keeps the {s} [in a shed|polished]",
        exclusive_vps="[drives|rides|uses|takes out|parks] the {s}",
        appositions="the {s}, [owned by|the property of] {v},"),
    "pet": Phrasebook(
        "{s}", "person", "pet",
        vps="[has|keeps|owns|looks after] a {a} [called|named] {v}; [calls|called|dubbed|christened] the {a} {v}; "
            "gave the {a} the name {v}; has a {a} by the name of {v}",
        nouns="{s}'s {a}; the {a} of {s}; the {a} that {s} [keeps|owns]; the name of {s}'s {a}",
        asks="What [is|was] {s}'s {a} [called|named]; What is the {a} [of|owned by|belonging to] {s} called; "
             "What [does|did] {s} call the {a}; What did {s} [dub|christen] the {a}; What name did {s} give the {a}; "
             "What name does {s}'s {a} answer to",
        embedded="what {s}'s {a} is called; what {s} calls the {a}; the name of {s}'s {a}",
        value_vps="is what {s} calls the {a}; is the name of {s}'s {a}",
        copulas="is; is called; is named; answers to the name"),
    "age": Phrasebook(
        "{s}", "person", "other",
        vps="is {v} years [old|of age]; [turned|has just turned] {v}; is aged {v}",
        nouns="the age of {s}; {s}'s age",
        asks="How old is {s}[| these days]; What [age is {s}|is {s}'s age|is the age of {s}]; "
             "How many years has {s} lived",
        embedded="how old {s} is; what age {s} is; how many years {s} has lived",
        appositions="{s}, aged {v},; {s}, {v} years old,"),
    "height": Phrasebook(
        "the {s}", "thing", "other",
        vps="is {v} metres [tall|high]; [rises|stands|towers] {v} metres [high|above the ground]; "
            "[measures|reaches] {v} metres",
        nouns="the height of the {s}; the {s}'s height",
        asks="How [tall|high] does the {s} [stand|rise]; How many metres [tall|high] is the {s}; "
             "What is the height of the {s}[| in metres]; How many metres does the {s} [measure|rise]",
        embedded="how [tall|high] the {s} is; how many metres the {s} [rises|measures]",
        appositions="the {s}, {v} metres [tall|high],",
        unit=" metres"),
    "founder": Phrasebook(
        "{s}", "thing", "person",
        vps="was [started|set up|established] by {v}; owes its [founding|existence] to {v}",
        nouns="the founder of {s}; the person who [founded|started] {s}",
        asks="Who [founded|started|set up|established] {s}; Who is the founder of {s}; "
             "By whom was {s} [founded|set up|established]; Which person [founded|set up] {s}",
        embedded="who [founded|set up|started] {s}; who the founder of {s} was",
        value_vps="[founded|started|set up|established] {s}; is remembered as the founder of {s}",
        exclusive_vps="[founded|set up] {s}",
        appositions="{s}, [founded|set up|started] by {v},"),
    "room": Phrasebook(
        "{s}", "person", "other",
        vps="is [sleeping|lodging] in room {v}; has [room|the key to room] {v}; [booked|took] room {v}; is in room {v}",
        nouns="{s}'s room number; the room number of {s}; the number of the room {s} booked",
        asks="[Which|What] room [is {s} [sleeping|lodging] in|does {s} have|did {s} book]; "
             "What is {s}'s room number; In which room is {s} [sleeping|lodging]",
        embedded="which room {s} [is in|has|booked]; what {s}'s room number is",
        appositions="{s}, in room {v},"),
    "food": Phrasebook(
        "{s}", "person", "other",
        vps="[loves|adores|prefers] {v} [above all|most of all]; would eat {v} every day; "
            "always [orders|chooses|asks for] {v}; never tires of {v}",
        nouns="the favourite dish of {s}; {s}'s favourite [food|dish|meal]; the food {s} likes best",
        asks="What [is {s}'s favourite [food|dish]|does {s} like to eat [best|most]|food does {s} like best|"
             "does {s} [love|prefer] to eat]; Which [food|dish] does {s} [like|prefer] [best|most]",
        embedded="what {s} likes to eat [best|most]; which food {s} [prefers|likes best]; "
                 "what {s}'s favourite [food|dish] is",
        appositions="{s}, a lover of {v},",
        value_opens=False),
    "instrument": Phrasebook(
        "{s}", "person", "other",
        vps="plays the {v}; [took up|practises|learned] the {v}; has played the {v} since childhood",
        nouns="{s}'s instrument; the instrument of {s}; the instrument {s} plays",
        asks="[What|Which] instrument does {s} [play|practise]; Which instrument is {s}'s; What does {s} play in the band",
        embedded="[which|what] instrument {s} [plays|practises]",
        appositions="{s}, the band's {v} player,",
        value_opens=False),
    "sister": Phrasebook(
        "{s}", "person", "person",
        vps="has a sister [called|named] {v}; grew up with a sister [called|named] {v}",
        nouns="the sister of {s}; {s}'s sister",
        asks="Who is [{s}'s sister|the sister of {s}]; What is [the name of {s}'s sister|{s}'s sister called]; "
             "Which person is {s}'s sister",
        embedded="who {s}'s sister is; what {s}'s sister is called",
        value_vps="is [the sister|the younger sister|the elder sister] of {s}",
        copulas="is; is called"),
    "ferry": Phrasebook(
        "the [ferry|boat] [to|for] {s}", "thing", "other",
        vps="[leaves|sails|departs] at {v}; [leaves|sails] every day at {v}; is timetabled for {v}",
        nouns="the departure time of the ferry to {s}; the time the [ferry|boat] to {s} leaves",
        asks="[When|At what time|What time] does the [ferry|boat] [to|for] {s} [leave|sail|depart]",
        embedded="[when|at what time] the [ferry|boat] to {s} [leaves|sails]",
        appositions="the ferry to {s}, [leaving|sailing] at {v},"),
    "price": Phrasebook(
        "the {s}", "thing", "other",
        vps="costs {v} pounds; [sells|was sold|goes] for {v} pounds; is priced at {v} pounds; can be had for {v} pounds",
        nouns="the price of the {s}; the {s}'s price",
        asks="How much [does the {s} cost|is the {s}|did the {s} sell for]; What [is the price of the {s}|"
             "does the {s} sell for]; How many pounds [is the {s}|does the {s} cost]",
        embedded="how much the {s} costs; what the {s} sells for",
        appositions="the {s}, [priced at|on sale for] {v} pounds,",
        unit=" pounds"),
    "teacher": Phrasebook(
        "{s}", "person", "person",
        vps="learned to read from {v}; was taught [to read|] by {v}; had lessons with {v}",
        nouns="the teacher of {s}; {s}'s [teacher|first teacher]",
        asks="Who [taught {s}[| to read]|gave {s} lessons|was {s}'s teacher]; From whom did {s} learn to read; "
             "By whom was {s} taught",
        embedded="who taught {s}; who {s}'s teacher was",
        value_vps="taught {s} [to read|at school]; gave {s} lessons; is {s}'s old teacher",
        exclusive_vps="taught {s} to read"),
}

# what may follow a subject or value that a relative clause or an apposition interrupts, by kind
RESTS = {"person": expand("came by train; said very little; was at the meeting; had already left; sat by the window"),
         "thing": expand("was mentioned twice in the report; came up at the meeting; was on the list"),
         "place": expand("is a quiet town; lies by the river; was mentioned in the report"),
         "pet": expand("sleeps by the fire; came running; is getting old")}
FRONTS = expand("As it happens; By all accounts; For the record; In fact; According to the records; Oddly enough; "
                "As everyone in town knows; Last anyone heard")
FRAMES = expand("Everyone knows that; It is said that; The records show that; Word has it that; I was told that; "
                "It is common knowledge that; People say that; It turns out that")
TAILS = expand(", as everyone knows; , or so people say; , according to the records; , as it happens")
EXCLUSIVE = expand("[No one|Nobody] [except|other than|apart from|besides] {v} [ever |]{vp}; Only {v} [ever |]{vp}; "
                   "The only [one|person] who [ever |]{vp} is {v}; {v} is the only [one|person] who {vp}; "
                   "{v} and no one else {vp}")
QUESTION_FRONTS = expand("According to the text; From the text; Going by the text")
ASK_FRAMES = expand("Tell me {q}.; Please tell me {q}.; Say {q}.; Can you tell me {q}?; Do you know {q}?; "
                    "Could you say {q}?")
NOUN_ASKS = expand("{wh} is {n}?; Tell me {n}.; Name {n}.; Give {n}.; {wh} would you say is {n}?")
SLOT = r"[\w'-]+(?: [\w'-]+){0,5}"  # a filled slot: a value of up to six words, no clause


@functools.lru_cache(maxsize=None)
def heldout_patterns() -> tuple[re.Pattern, ...]:
    """Every held-out fact and question template as a pattern that finds its wording, slots filled with any
    short value, anywhere in a sentence (so 'Everyone knows that Mira was born in Ashford' counts too)."""
    held = Pools("heldout", random.Random(0))
    out = []
    for t in {t for r in held.relations for t in r.facts + r.questions + r.pair}:
        pattern = re.escape(t.rstrip(".?"))
        for slot in ("s", "S", "a", "v", "V", "s1", "s2"):
            pattern = pattern.replace(re.escape("{" + slot + "}"), SLOT)
        out.append(re.compile(pattern, re.IGNORECASE))
    return tuple(out)


def writes_heldout(text: str) -> bool:
    return any(p.search(text) for p in heldout_patterns())


def capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


class Composer:
    """Draws training fact sentences and questions of one relation from its Phrasebook. Each draw is a shape
    (a template over {s} {v} {a}, composed from parts) that `TaskMaker` fills."""

    def __init__(self, book: Phrasebook, rng: random.Random):
        self.book, self.rng = book, rng
        b = book
        self.subjects, self.vps, self.nouns = expand(b.subject), expand(b.vps), expand(b.nouns)
        self.value_vps, self.exclusive_vps = expand(b.value_vps), expand(b.exclusive_vps)
        self.appositions, self.copulas = expand(b.appositions), expand(b.copulas)
        self.asks, self.embedded = expand(b.asks), expand(b.embedded)
        self.who = "who" if b.kind == "person" else "which"
        # a name is asked as 'the name of ...' ('What is Mira's dog?' would ask for the animal)
        named = "is called" in self.copulas
        self.asked_nouns = tuple(f"the name of {n}" if named and "name" not in n else n for n in self.nouns)

    def statement(self) -> str:
        """A fact's shape: a clause from one construction, sometimes framed by an adverbial, plus a full stop."""
        builders = [self.plain, self.relative, self.copula, self.cleft]
        builders += [self.value_first] * bool(self.value_vps)
        builders += [self.exclusive] * bool(self.exclusive_vps)
        builders += [self.apposition] * bool(self.appositions or self.book.value_kind in RESTS)
        return capitalise(self.frame(self.rng.choice(builders)())) + "."

    def frame(self, clause: str) -> str:
        r, way = self.rng, self.rng.random()
        if way < 0.15:
            return f"{r.choice(FRONTS)}, {clause}"
        if way < 0.3:
            return f"{r.choice(FRAMES)} {clause}"
        return clause + r.choice(TAILS) if way < 0.4 else clause

    def plain(self) -> str:  # subject first, active or passive as the verb phrase has it
        return f"{self.rng.choice(self.subjects)} {self.rng.choice(self.vps)}"

    def relative(self) -> str:  # the fact inside a relative clause of the subject (or of a person value)
        r = self.rng
        if self.value_vps and self.book.value_kind == "person" and r.random() < 0.5:
            return f"{{v}}, who {r.choice(self.value_vps)}, {r.choice(RESTS['person'])}"
        rest = RESTS["person" if self.book.kind == "person" else "thing"]
        return f"{r.choice(self.subjects)}, {self.who} {r.choice(self.vps)}, {r.choice(rest)}"

    def copula(self) -> str:  # possessive or 'the N of': value last, or first where its case survives
        r = self.rng
        noun, verb, value = r.choice(self.nouns), r.choice(self.copulas), "{v}" + self.book.unit
        if self.book.value_opens and verb == "is" and r.random() < 0.4:
            return f"{value} is {noun}"
        return f"{noun} {verb} {value}"

    def cleft(self) -> str:  # 'It was X who ...' or 'It is in X that ...'
        r = self.rng
        if self.value_vps and self.book.value_kind == "person":
            vp = r.choice(self.value_vps)
            tense = "is" if vp.split()[0].endswith("s") else "was"  # 'owns', 'is' / 'bought', 'taught'
            return f"it {tense} {{v}} who {vp}"
        vp = r.choice(self.vps)
        m = re.fullmatch(r"(.+?) (in|from|on|at|as|by|since|for) ((?:a )?\{v\}(?: pounds| metres)?)(.*)", vp)
        if not m:
            return self.plain()
        verb, prep, value, rest = m.groups()
        return f"it is {prep} {value} that {r.choice(self.subjects)} {verb}{rest}"

    def value_first(self) -> str:
        return f"{{v}} {self.rng.choice(self.value_vps)}"

    def exclusive(self) -> str:  # 'No one except X drives ...': the value is the only one who does it
        vp = self.rng.choice(self.exclusive_vps + self.value_vps)
        return self.rng.choice(EXCLUSIVE).replace("{vp}", vp)

    def apposition(self) -> str:
        r = self.rng
        if self.appositions and (self.book.value_kind not in RESTS or r.random() < 0.5):
            rest = RESTS["person" if self.book.kind == "person" else "thing"]
            return f"{r.choice(self.appositions)} {r.choice(rest)}"
        return f"{{v}}, {r.choice(self.nouns)}, {r.choice(RESTS[self.book.value_kind])}"

    def question(self) -> str:
        r, way = self.rng, self.rng.random()
        if way < 0.45:
            q = r.choice(self.asks)
            return f"{r.choice(QUESTION_FRONTS)}, {q[0].lower() + q[1:]}?" if r.random() < 0.15 else f"{q}?"
        if way < 0.7:
            return r.choice(ASK_FRAMES).replace("{q}", r.choice(self.embedded))
        noun = r.choice(self.asked_nouns)
        wh = "Who" if self.book.value_kind == "person" and not noun.startswith("the name") else "What"
        return capitalise(r.choice(NOUN_ASKS).replace("{wh}", wh).replace("{n}", noun))


# ----------------------------------------------------------------------------- pools

class Pools:
    """The training or the held-out part of every pool, and random draws from them."""

    def __init__(self, split: str, rng: random.Random):
        assert split in ("train", "heldout"), split
        self.split, self.rng = split, rng
        self.first, self.surnames = split_pool(FIRST, split), split_pool(SURNAMES, split)
        places = [h + t for h in PLACE_HEADS for t in PLACE_TAILS]
        self.places = split_pool(places, split)
        self.pets = split_pool(PET_NAMES, split)
        self.objects = split_pool([f"{c} {t}" for c in COLOURS for t in THINGS], split)
        self.acts = [a for a in STORY_ACTS if heldout(a[0]) == (split == "heldout")]
        self.relations = [self._split_relation(r) for r in RELATIONS]
        self.chains, self.openers, self.shapes = CHAINS, STORY_OPENERS, STORY_SHAPES
        self.story_questions = STORY_QUESTIONS
        if split == "train":  # appended, never mixed in: the held-out draws stay the evaluation set's
            self.acts += MORE_STORY_ACTS
            self.relations += TRAIN_RELATIONS
            self.chains, self.openers = CHAINS + MORE_CHAINS, STORY_OPENERS + MORE_STORY_OPENERS
            self.shapes = STORY_SHAPES + MORE_STORY_SHAPES
            self.story_questions = {k: STORY_QUESTIONS.get(k, ()) + MORE_STORY_QUESTIONS.get(k, ())
                                    for k in {**STORY_QUESTIONS, **MORE_STORY_QUESTIONS}}
            # training stories combine these freely (TaskMaker.lexicon_story); the held-out split has none
            self.verbs, self.nouns = STORY_VERBS, STORY_NOUNS
            self.story_places = STORY_PLACES + STORY_TIMES

    def _split_relation(self, r: Relation) -> Relation:
        # the templates themselves are split: held-out questions and facts are phrasings training never saw
        pick = lambda ts: split_templates(ts)[self.split == "heldout"]
        facts, questions = pick(r.facts), pick(r.questions)
        if self.split == "train":
            for extra in (MORE_PHRASINGS, VARIED_PHRASINGS):
                more_facts, more_questions = extra.get(r.name, ((), ()))
                facts, questions = facts + more_facts, questions + more_questions
        return Relation(r.name, r.subject, r.value, facts, questions, pick(r.pair) if r.pair else ())

    def name(self, pool: list[str], coined: float = 0.5, **coin_args) -> str:
        """A name of the pool's list, or (with probability `coined`) a made-up one of the same split."""
        if self.rng.random() < coined:
            return coin(self.rng, self.split, **coin_args)
        return self.rng.choice(pool)

    def person(self) -> str:
        first = self.name(self.first)
        return first if self.rng.random() < 0.4 else f"{first} {self.name(self.surnames)}"

    def draw(self, pool: str) -> str:
        """One random value of a pool (subjects and values both come from here)."""
        r = self.rng
        if pool == "person":
            return self.person()
        if pool == "place":
            return self.name(self.places, tail=r.choice(PLACE_TAILS), syllables=(1, 2))
        if pool == "object":
            return r.choice(self.objects)
        if pool == "code":
            return str(r.randint(10 ** (d := r.randint(3, 6)) // 10, 10 ** d - 1))
        if pool == "date":
            day, month, year = r.randint(1, 28), r.choice(MONTHS), r.randint(1700, 2030)
            return f"{day} {month} {year}" if r.random() < 0.6 else f"{month} {day}, {year}"
        if pool == "job":
            return r.choice(JOBS)
        if pool == "building":
            return f"{r.choice(['library', 'museum', 'bridge', 'railway station', 'theatre', 'market hall', 'school', 'observatory', 'hospital', 'ferry terminal'])} in {self.draw('place')}"
        if pool == "vehicle":
            return f"{r.choice(COLOURS)} {r.choice(['van', 'bicycle', 'boat', 'tractor', 'motorcycle', 'car', 'carriage', 'caravan'])}"
        if pool == "pet":
            return self.name(self.pets)
        if pool == "age":
            return str(r.randint(6, 99))
        if pool == "metres":
            return str(r.randint(12, 480))
        if pool == "tower":
            return f"{r.choice(['clock tower', 'lighthouse', 'water tower', 'bell tower', 'radio mast', 'chimney'])} of {self.draw('place')}"
        if pool == "org":
            return f"{r.choice(ORGS)} of {self.draw('place')}"
        if pool == "room":
            return str(r.randint(1, 9) * 100 + r.randint(1, 40))
        if pool == "food":
            return r.choice(FOODS)
        if pool == "feature":
            return r.choice(FEATURES)
        if pool == "instrument":
            return r.choice(INSTRUMENTS)
        if pool == "time":
            return f"{r.randint(5, 22)}:{r.choice((0, 10, 15, 20, 30, 40, 45, 50)):02d}"
        if pool == "price":
            return str(r.randint(2, 950))
        raise KeyError(pool)


def _fill(template: str, **slots: str) -> str:
    """str.format with {S}/{B} as the capitalised {s}/{b} (sentence-initial subjects)."""
    caps = {k.upper(): v[:1].upper() + v[1:] for k, v in slots.items()}
    return template.format(**slots, **caps)


def shape_of(fact: tuple[str, str, str, dict]) -> str:
    """A fact sentence with its subject and value put back as slots: its phrasing."""
    sentence, s, v, _ = fact
    return sentence.replace(v, "{v}").replace(s, "{s}").replace(capitalise(s), "{s}")


def told_apart(fact: tuple[str, str, str, dict], facts: list[tuple[str, str, str, dict]]) -> bool:
    """Whether `fact` can join `facts` with one answer to each question: a new value, and no subject that begins
    another ("Mira" and "Mira Holt" would make the question ambiguous)."""
    _, s, v, _ = fact
    return all(v != x[2] and not (s.startswith(x[1]) or x[1].startswith(s)) for x in facts)


def _contains(a: str, b: str) -> bool:
    return re.search(rf"\b{re.escape(a)}\b", b) is not None


def fits(e: Event, events: list[Event]) -> bool:
    """Whether event `e` can join `events` without making a question ambiguous: no other event by the same
    agent does the same to the same things, no two people share a first name, and no verb, noun or place
    is a part of a different one ('hung' and 'hung out', 'in the attic' and 'in the attic room')."""
    for x in events:
        if (x.agent, x.verb, x.noun) == (e.agent, e.verb, e.noun):
            return False
        if x.agent != e.agent and x.agent.split()[0] == e.agent.split()[0]:
            return False
        for a, b in ((x.verb.past, e.verb.past), (x.noun, e.noun), (x.place, e.place)):
            if a != b and (_contains(a, b) or _contains(b, a)):
                return False
    return True


def template_slots(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def singles_out(template: str, events: list[Event], k: int) -> bool:
    """Whether the slots `template` names (agent, verb forms, noun, place, count) match event k and no other."""
    names = template_slots(template)
    want = {n: events[k].slots()[n] for n in names}
    return sum(all(e.slots()[n] == v for n, v in want.items()) for e in events) == 1


# ----------------------------------------------------------------------------- the task maker

@dataclass
class Task:
    kind: str
    document: str
    question: str
    answer: str
    depths: tuple[float, ...]   # where the asked sentences were placed, as shares of the document

    @property
    def prompt(self) -> str:
        return format_task(self.document, self.question)

    @property
    def text(self) -> str:
        return format_task(self.document, self.question, self.answer)


SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")


class TaskMaker:
    """Seeded reading tasks over natural documents `texts`, lengths counted with `tokenizer`
    (a `tokenizers.Tokenizer`: encode(...).ids)."""

    KINDS = ("single", "multi", "two", "story", "quote")

    def __init__(self, texts: list[str], tokenizer, split: str = "train", seed: int = 0,
                 story_asks: dict[str, float] | None = None, story_coined: float = 0.0, story_neutral: bool = False):
        """story_asks: relative weights of what training stories ask ({"who": 3}: three times as many "who"
        questions as each other kind; a kind left out weighs 1); None asks every kind alike. story_coined: the share
        of training story verbs and nouns that are made-up words (each drawn apart; coined_verb, coined_noun).
        story_neutral: "who" questions carry no cue but the event's words (each person is the answer alike, however
        many things they did; asides about anyone); run 19 answered training stories' "who" 65%, held-out ones' 49%,
        and training ones without those two cues 57% (benchmarks/reading_who_gap.md)."""
        self.texts = [t for t in texts if len(t) > 400]
        assert self.texts, "no natural documents to read"
        unknown = set(story_asks or {}) - set(STORY_ASKS)
        if unknown:
            raise ValueError(f"unknown story question kinds {sorted(unknown)}; known: {STORY_ASKS}")
        if not 0 <= story_coined <= 1:
            raise ValueError(f"story_coined is a share in [0, 1], got {story_coined}")
        self.tok, self.rng, self.story_asks = tokenizer, random.Random(seed), story_asks
        self.story_coined, self.story_neutral = story_coined, story_neutral
        self.pools = Pools(split, self.rng)
        # training facts and questions are composed (Composer); building them draws nothing
        self.composers = {r.name: Composer(PHRASEBOOKS[r.name], self.rng) for r in self.pools.relations} \
            if split == "train" else {}

    def ntokens(self, text: str) -> int:
        return len(self.tok.encode(text, add_special_tokens=False).ids)

    # ---- natural filler, as sentences grouped in paragraphs

    def filler(self, tokens: int) -> list[list[str]]:
        """Paragraphs (lists of sentences) of natural text, about `tokens` tokens in all, from a random
        point of random documents (several documents follow each other if one is too short)."""
        paras, total = [], 0
        while tokens - total > 24:
            text = self.rng.choice(self.texts)
            blocks = [b for b in text.split("\n\n") if b.strip()]
            for block in blocks[self.rng.randrange(len(blocks)):]:
                take, room = [], tokens - total - 1  # 1: the paragraph break
                for s in (s.strip() for s in SENTENCE_END.split(block)):
                    n = self.ntokens(" " + s) if s else 0
                    if 0 < n <= room:  # a sentence longer than the room left is skipped
                        take.append(s)
                        room -= n
                while take and self.ntokens(" ".join(take)) > tokens - total - 1:
                    take.pop()  # sentences count a little differently once joined
                if take:
                    paras.append(take)
                    total += self.ntokens(" ".join(take)) + 1
                if tokens - total <= 24:
                    break
        return paras

    def place(self, paras: list[list[str]], inserts: list[tuple[float, str]]) -> tuple[str, list[float]]:
        """The document: `inserts` (depth, sentence) placed between sentences at those depths."""
        paras = paras or [[]]  # no room for filler: the inserted sentences alone
        # every sentence boundary, with the share of the text's characters before it
        slots, before, total = [], [], sum(len(x) + 1 for para in paras for x in para)
        done = 0
        for p, para in enumerate(paras):
            for i in range(len(para) + 1):
                slots.append((p, i))
                before.append(done / max(1, total))
                done += len(para[i]) + 1 if i < len(para) else 0
        # each insert goes at the free boundary nearest its depth
        at = {}
        for k in sorted(range(len(inserts)), key=lambda k: inserts[k][0]):
            free = [j for j in range(len(slots)) if j not in at.values()] or list(range(len(slots)))
            at[k] = min(free, key=lambda j: abs(before[j] - inserts[k][0]))
        paras = [list(p) for p in paras]
        for k in sorted(at, key=lambda k: -at[k]):  # from the end, so earlier indices stay valid
            p, i = slots[at[k]]
            paras[p].insert(i, inserts[k][1])
        doc = "\n\n".join(" ".join(p) for p in paras)
        depths = [doc.find(s) / max(1, len(doc)) for _, s in inserts]
        return doc, depths

    # ---- kinds

    def relation(self, name: str | None = None) -> Relation:
        rels = self.pools.relations
        return next(r for r in rels if r.name == name) if name else self.rng.choice(rels)

    def fact(self, rel: Relation, subject: str | None = None, value: str | None = None) -> tuple[str, str, str, dict]:
        """(sentence, subject, value, extra slots) of one fact of `rel`."""
        if self.pools.split == "train":  # before any draw: the held-out split's draws below stay the evaluation set's
            return self.composed_fact(rel, subject, value)
        p, extra = self.pools, {}
        if rel.subject == "person_animal":
            subject, extra["a"] = subject or p.person(), self.rng.choice(ANIMALS)
        else:
            subject = subject or p.draw(rel.subject)
        value = value or p.draw(rel.value)
        return _fill(self.rng.choice(rel.facts), s=subject, v=value, **extra), subject, value, extra

    def distinct_facts(self, rel: Relation, n: int) -> list[tuple[str, str, str, dict]]:
        """n facts of `rel` with different subjects and values (training: and different phrasings)."""
        facts = []
        while len(facts) < n:
            f = self.fact(rel)
            if told_apart(f, facts) \
                    and (self.pools.split != "train" or shape_of(f) not in {shape_of(x) for x in facts}):
                facts.append(f)
        return facts

    def parallel_facts(self, rel: Relation, n: int) -> list[tuple[str, str, str, dict]]:
        """Training: n facts of `rel` in one shared phrasing, told apart only by subject and value. Held-out multi
        tasks state their facts alike (one or two held-out templates a relation: 87% repeat a phrasing), and so does
        the studio's "several facts" sample ("Lena lives in Ashford. Tobias Crane lives in Kelmouth. ..."); run 6,
        trained on differently phrased distractors only, answered its first fact to every question."""
        compose = self.composers[rel.name].statement
        for _ in range(200):
            shape, facts = self.training_shape(compose, rel.facts), []
            for _ in range(20 * n):
                s, v, extra = self.fact_slots(rel, None, None)
                text = self.filled(shape, s, v, extra)
                if text and told_apart((text, s, v, extra), facts):
                    facts.append((text, s, v, extra))
                if len(facts) == n:
                    return facts
        raise AssertionError(f"no shared phrasing of {rel.name!r} for {n} facts")

    def question(self, rel: Relation, subject: str, extra: dict) -> str:
        if self.pools.split != "train":
            return _fill(self.rng.choice(rel.questions), s=subject, **extra)
        return self.composed(self.composers[rel.name].question, rel.questions, subject, "", extra)

    # ---- training facts and questions composed from parts (Composer), never in a held-out wording

    def composed_fact(self, rel: Relation, subject: str | None, value: str | None) -> tuple[str, str, str, dict]:
        subject, value, extra = self.fact_slots(rel, subject, value)
        sentence = self.composed(self.composers[rel.name].statement, rel.facts, subject, value, extra)
        return sentence, subject, value, extra

    def fact_slots(self, rel: Relation, subject: str | None, value: str | None) -> tuple[str, str, dict]:
        """(subject, value, extra slots) of one training fact; a small number is sometimes written in words."""
        p, extra = self.pools, {}
        if rel.subject == "person_animal":
            subject, extra["a"] = subject or p.person(), self.rng.choice(ANIMALS)
        else:
            subject = subject or p.draw(rel.subject)
        return subject, value or self.in_words_sometimes(rel.value, p.draw(rel.value)), extra

    def in_words_sometimes(self, pool: str, value: str) -> str:
        """`value`, or (half the time, for a quantity under 100) its English words. On 2026-11-30 run 6 answered
        no story count written in words (0 of 8 held-out, 0 of 8 training-pool), giving another event's digits
        or "1" instead: every other numeric answer of training was digits, 7 to 1, so 'how many' meant digits."""
        if pool in SPELLED_POOLS and int(value) < 100 and self.rng.random() < 0.5:
            return number_words(int(value))
        return value

    def composed(self, compose, templates: tuple[str, ...], s: str, v: str, extra: dict) -> str:
        """A composed shape (now and then one of the relation's training templates, which hold wordings the
        parts do not) filled in; drawn again while it loses the value's case or says a held-out wording."""
        for _ in range(200):
            text = self.filled(self.training_shape(compose, templates), s, v, extra)
            if text:
                return text
        raise AssertionError(f"no training phrasing of {templates[0]!r} for {s!r}, {v!r}")

    def training_shape(self, compose, templates: tuple[str, ...]) -> str:
        """A composed shape, or (a fifth of the time) one of the relation's training templates."""
        return compose() if self.rng.random() < 0.8 else self.rng.choice(templates)

    @staticmethod
    def filled(shape: str, s: str, v: str, extra: dict) -> str | None:
        """`shape` filled in, or None where the value lost its case (its span) or the text says a held-out wording."""
        text = capitalise(_fill(shape, s=s, v=v, **extra))
        return text if v in text and not writes_heldout(text) else None

    def single(self, tokens: int, depth: float | None = None) -> Task:
        rel = self.relation()
        sentence, s, v, extra = self.fact(rel)
        q = self.question(rel, s, extra)
        depth = self.rng.random() if depth is None else depth
        doc, depths = self.place(self.filler(tokens - self.ntokens(sentence)), [(depth, sentence)])
        return Task("single", doc, q, v, tuple(depths))

    def multi(self, tokens: int) -> Task:
        rel, n = self.relation(), self.rng.randint(2, 5)
        # the held-out split draws nothing more here: the evaluation set's draws stay as they were
        parallel = self.pools.split == "train" and self.rng.random() < PARALLEL_SHARE
        facts = self.parallel_facts(rel, n) if parallel else self.distinct_facts(rel, n)
        asked = self.rng.randrange(len(facts))
        _, s, v, extra = facts[asked]
        q = self.question(rel, s, extra)
        inserts = [(self.rng.random(), f[0]) for f in facts]
        if self.pools.split == "train" and self.rng.random() < TOGETHER_SHARE:
            inserts = [(inserts[asked][0], " ".join(f[0] for f in facts))]
        doc, _ = self.place(self.filler(tokens - sum(self.ntokens(f[0]) for f in facts)), inserts)
        return Task("multi", doc, q, v, (doc.find(facts[asked][0]) / max(1, len(doc)),))

    def two(self, tokens: int) -> Task:
        r = self.rng
        if r.random() < 0.5:  # both values
            rel = r.choice([x for x in self.pools.relations if x.pair])
            facts = self.distinct_facts(rel, r.choice([2, 2, 3]))
            a, b = r.sample(range(len(facts)), 2)
            q = _fill(r.choice(rel.pair), s1=facts[a][1], s2=facts[b][1])
            answer = f"{facts[a][2]} and {facts[b][2]}"
            asked = (a, b)
            sentences = [f[0] for f in facts]
        else:  # a chain through a bridge value
            rel_name, second, question, pool = r.choice(self.pools.chains)
            first, s, bridge, _ = self.fact(self.relation(rel_name))
            answer = self.pools.draw(pool)
            sentences = [first, _fill(second, b=bridge, v=answer)]
            q, asked = _fill(question, s=s), (0, 1)
        inserts = [(r.random(), s) for s in sentences]
        doc, depths = self.place(self.filler(tokens - sum(self.ntokens(s) for s in sentences)), inserts)
        return Task("two", doc, q, answer, tuple(depths[k] for k in asked))

    def story(self, tokens: int) -> Task:
        """A few events (who did what, how many, where), spread through the text; one is asked."""
        r, p = self.rng, self.pools
        if p.split == "train":  # before any draw: the held-out split's draws below stay the evaluation set's
            return self.lexicon_story(tokens)
        acts = r.sample(p.acts, r.randint(2, 5))
        agents = []
        while len(agents) < len(acts):  # distinct people, so that "who" has one answer
            a = p.person()
            agents += [a] if all(a.split()[0] != b.split()[0] for b in agents) else []
        events = []
        for (past, base, noun, place, *participle), agent in zip(acts, agents):
            n = r.randint(2, 60)
            count = number_words(n) if r.random() < 0.5 else str(n)
            opener = r.choice(p.openers)
            participle = (participle or [past])[0]
            # one shape draws nothing: the held-out split's tasks (the evaluation set) depend on every draw
            shape = r.choice(p.shapes) if len(p.shapes) > 1 else p.shapes[0]
            s = event_sentence(shape, opener=opener, agent=agent, past=past, count=count, noun=noun, place=place,
                               past_passive=participle)
            events.append((s, agent, past, base, noun, place, count, participle))
        k = r.randrange(len(events))
        _, agent, past, base, noun, place, count, participle = events[k]
        kind = r.choice(list(p.story_questions))
        slots = dict(agent=agent, past=past, base=base, noun=noun, place=place, past_passive=participle)
        q = r.choice(p.story_questions[kind]).format(**slots)
        answer = {"who": agent, "count": count, "where": place, "what": noun}[kind]
        inserts = [(r.random(), e[0]) for e in events]
        doc, depths = self.place(self.filler(tokens - sum(self.ntokens(e[0]) for e in events)), inserts)
        return Task("story", doc, q, answer, (depths[k],))

    # ---- training stories: events from independent parts (STORY_VERBS, STORY_NOUNS, STORY_PLACES)

    def lexicon_story(self, tokens: int) -> Task:
        events, k, question, answer = self.story_plan()
        texts, asked = self.story_texts(events, k)
        # a "who" question's answer is the asked event's person: story_neutral lets no aside point to it
        texts += self.story_asides(events, k, anyone=self.story_neutral and answer == events[k].agent)
        doc, _ = self.place(self.filler(tokens - sum(self.ntokens(t) for _, t in texts)), texts)
        return Task("story", doc, question, answer, (doc.find(asked) / max(1, len(doc)),))

    def story_plan(self) -> tuple[list[Event], int, str, str]:
        """(events, index of the asked one, question, answer): 2-6 events, the question singling out one."""
        events = self.story_events(self.rng.randint(2, 6))
        k, kind, template = self.story_question(events)
        slots = events[k].slots()
        answer = slots[{"who": "agent", "count": "count", "where": "place", "when": "place", "what": "noun"}[kind]]
        return events, k, template.format(**slots), answer

    def story_events(self, n: int) -> list[Event]:
        """n events; a later one sometimes shares the agent, the noun or the verb of an earlier one, so that
        the question's other words, not a remembered pairing, pick the event."""
        events = []
        for _ in range(50 * n):
            if len(events) == n:
                break
            e = self.story_event(events)
            if fits(e, events):
                events.append(e)
        return events

    def story_event(self, events: list[Event]) -> Event:
        r, p = self.rng, self.pools
        agent, verb, noun = None, coined_verb(r) if self.coins() else r.choice(p.verbs), None
        other = r.choice(events) if events else None
        share = r.random() if other else 1.0
        if share < 0.25:     # the same person does something else
            agent = other.agent
        elif share < 0.45:   # the same things, something else done to them (any verb takes a coined noun)
            noun = other.noun
            verb = r.choice([v for v in VERBS_OF_NOUN.get(noun, p.verbs) if v != other.verb])
        elif share < 0.6:    # the same verb, other things
            verb = other.verb
        if noun is None:
            noun = coined_noun(r) if self.coins() else r.choice(p.nouns[r.choice(verb.takes)])
        n = r.randint(2, 60)
        count = number_words(n) if r.random() < 0.5 else str(n)
        return Event(agent or p.person(), verb, noun, self.story_place(), count)

    def coins(self) -> bool:
        """Whether the next verb or noun is made up: story_coined of the time (drawing nothing when it is 0, so the
        stories of a maker without it stay as they were)."""
        return self.story_coined > 0 and self.rng.random() < self.story_coined

    def story_place(self) -> str:
        """Where or when an event happened: a time phrase as often as before, else a listed place (a third of the
        time) or a composed one."""
        r, places = self.rng, self.pools.story_places
        if r.random() < len(STORY_TIMES) / len(places):
            return r.choice(STORY_TIMES)
        return r.choice(STORY_PLACES) if r.random() < 1 / 3 else composed_place(r)

    def story_question(self, events: list[Event]) -> tuple[int, str, str]:
        """(asked event, question kind, template): a template whose words match the asked event only.
        Terminates: events differ in (agent, verb, noun), which every 'count' template names."""
        r, questions = self.rng, self.pools.story_questions
        for attempt in itertools.count():
            k = r.randrange(len(events))
            wrong = "where" if events[k].when else "when"
            kinds = [q for q in questions if q != wrong]
            # the weights give way after many misses: a story may have no event that a favoured kind singles out
            kind = self.weighted_ask(kinds) if attempt < 50 else r.choice(kinds)
            fitting = [t for t in questions[kind] if singles_out(t, events, k)]
            if fitting and not self.skips_busy_person(kind, events, k):
                return k, kind, r.choice(fitting)

    def skips_busy_person(self, kind: str, events: list[Event], k: int) -> bool:
        """story_neutral: whether to ask "who" of another event, so that a person who did n of the story's things is
        its answer no more often than one who did one (a draw kept with probability 1 / n)."""
        if not self.story_neutral or kind != "who":
            return False
        return self.rng.random() * sum(e.agent == events[k].agent for e in events) >= 1

    def weighted_ask(self, kinds: list[str]) -> str:
        """One of `kinds`, drawn by story_asks (alike without it, or where every weight there is 0)."""
        weights = [self.story_asks.get(kind, 1.0) for kind in kinds] if self.story_asks else []
        return self.rng.choices(kinds, weights)[0] if sum(weights) > 0 else self.rng.choice(kinds)

    def story_texts(self, events: list[Event], k: int,
                    layout: str | None = None) -> tuple[list[tuple[float, str]], str]:
        """(depth, text) inserts and the asked event's text. Layouts: each event anywhere ("spread"), all in one
        paragraph ("block"), in adjacent pairs ("pairs"), or the asked event at one end and the others at the other
        ("far"); drawn when `layout` is None."""
        r = self.rng
        shapes = self.story_shapes()
        order = r.sample(range(len(events)), len(events))
        layout = layout or r.choice(("spread", "block", "pairs", "far"))
        if layout == "block":
            groups = [(r.random(), order)]
        elif layout == "pairs":
            groups = [(r.random(), order[i:i + 2]) for i in range(0, len(order), 2)]
        elif layout == "far":
            start = r.random() < 0.5
            groups = [(r.uniform(0, 0.1) if start else r.uniform(0.9, 1), [k])]
            groups += [(r.uniform(0.55, 1) if start else r.uniform(0, 0.45), [i]) for i in order if i != k]
        else:
            groups = [(r.random(), [i]) for i in order]
        inserts, asked = [], ""
        for depth, group in groups:
            sentences = self.group_sentences([events[i] for i in group], events, shapes)
            inserts.append((depth, " ".join(s for s, _ in sentences)))
            asked = next((s for s, idx in sentences if k in [group[j] for j in idx]), asked)
        return inserts, asked

    def story_asides(self, events: list[Event], k: int, anyone: bool = False) -> list[tuple[float, str]]:
        """(depth, text) of one or two asides (ASIDE_SHARE of the stories, else none), most about the asked event's
        person (with `anyone`, about each of the story's people alike), each with a number no event has."""
        r = self.rng
        if r.random() >= ASIDE_SHARE:
            return []
        taken = {e.count for e in events}
        asides = []
        for _ in range(r.choice((1, 1, 2))):
            if anyone:
                agent = r.choice(list(dict.fromkeys(e.agent for e in events)))
            else:
                agent = events[k].agent if r.random() < 0.7 else r.choice(events).agent
            frame = r.choice(STORY_ASIDES + (FAMILY_ASIDES if " " in agent else ()))
            n = r.choice([n for n in range(2, 90) if number_words(n) not in taken and str(n) not in taken])
            count = number_words(n) if r.random() < 0.5 else str(n)
            taken.add(count)
            text = frame.format(agent=agent, surname=agent.split()[-1], count=count)
            asides.append((r.random(), text[0].upper() + text[1:]))
        return asides

    def story_shapes(self) -> tuple[str, ...]:
        """The sentence shapes of one story's events: all of them, or (PARALLEL_SHARE) one for every event. Held-out
        stories tell every event in one shape, so only the verb and noun tell the events apart; run 6, trained on
        stories whose events were mostly shaped differently, answered another event's agent or count in 38 of its
        58 misses."""
        shapes = self.pools.shapes
        return (self.rng.choice(shapes),) if self.rng.random() < PARALLEL_SHARE else shapes

    def group_sentences(self, group: list[Event], events: list[Event],
                        shapes: tuple[str, ...]) -> list[tuple[str, list[int]]]:
        """Sentences of adjacent events (with the positions in `group` each tells); two in a row by the
        same agent are sometimes told in one sentence."""
        out, i = [], 0
        while i < len(group):
            if i + 1 < len(group) and group[i].agent == group[i + 1].agent and self.rng.random() < 0.5:
                out.append((self.joined_sentence(group[i], group[i + 1]), [i, i + 1]))
                i += 2
            else:
                out.append((self.event_text(group[i], events, shapes), [i]))
                i += 1
        return out

    def event_text(self, e: Event, events: list[Event], shapes: tuple[str, ...]) -> str:
        r, p = self.rng, self.pools
        if sum(x.verb == e.verb and x.noun == e.noun for x in events) > 1:
            # another event did the same: 'Only X ...' would be false (the plain shape if nothing else is left)
            shapes = [s for s in shapes if not s.startswith("Only")] or STORY_SHAPES
        opener = "" if e.when else r.choice(p.openers)  # "That winter, ... last Tuesday" would clash
        return event_sentence(r.choice(shapes), opener=opener, **e.slots())

    def joined_sentence(self, a: Event, b: Event) -> str:
        opener = "" if a.when or b.when else self.rng.choice(self.pools.openers)
        second = {f"{key}2": v for key, v in b.slots().items()}
        return event_sentence(self.rng.choice(JOINED_SHAPES), opener=opener, **a.slots(), **second)

    def quote(self, tokens: int) -> Task:
        """Which words follow a quoted passage of the document (a span of its own natural text)."""
        paras = self.filler(tokens)
        # one-line sentences only: the answer is a span ended by a newline, and the question is one line
        sents = [s.split(" ") for p in paras for s in p if "\n" not in s]
        sents = [s for s in sents if len(s) >= 10]
        if not sents:
            return self.single(tokens)
        s = self.rng.choice(sents)
        i = self.rng.randrange(0, len(s) - 9)
        cue, answer = " ".join(s[i:i + 6]), " ".join(s[i + 6:i + 6 + self.rng.randint(1, 3)]).rstrip(".,;:")
        doc = "\n\n".join(" ".join(p) for p in paras)
        q = self.rng.choice(("Which words follow \"{c}\" in the text?", "In the text, what comes after \"{c}\"?",
                             "Complete the quotation from the text: \"{c} ...\""))
        return Task("quote", doc, q.format(c=cue), answer, (doc.find(cue) / len(doc),))

    def make(self, kind: str, tokens: int, depth: float | None = None) -> Task:
        if kind == "single":
            return self.single(tokens, depth)
        return getattr(self, kind)(tokens)

