"""Sentences for the corpus: written by us, with broad English phonetic coverage.

Three sources, mixed deterministically from a seed:
  - hand-written sentences that cover every ARPAbet phoneme several times;
  - carrier phrases around near-homophone minimal pairs whose lip shapes differ
    (fin/thin, bat/pat/mat/fat, vet/bet/wet, map/nap, sip/ship ...), the cases Wav2Sem is about;
  - a small grammar (determiner, adjective, noun, verb, place, time) over a varied lexicon.
"""
from __future__ import annotations

import numpy as np

HANDWRITTEN = (
    "The birch canoe slid over the smooth planks of the old boat yard.",
    "Five wives with vivid violet veils waved at the van.",
    "My mother bought a big blue umbrella in Bombay.",
    "Thirty thick thistles threatened the thin path through the field.",
    "She sells fresh fish and shellfish by the shore each morning.",
    "Which watch would you wish to wear on Wednesday?",
    "Judge Jenny enjoyed the orange juice at the church fair.",
    "The quick brown fox jumps over the lazy dog by the river.",
    "A large bright yellow yacht is moored in the harbour.",
    "Good food and cool music made the youth club a hit.",
    "Ralph laughed at the photo of his father on the roof.",
    "Boil the oil, then put the foil over the pot of peas.",
    "Nine new men will meet us at noon near the mill.",
    "How now, brown cow, out in the loud crowd of the town.",
    "Heavy rain fell all day on the quiet little village.",
    "Please pass the pepper and the bread to the boy by the pool.",
    "We measured the treasure with a ruler and a rope.",
    "Cheap chips and cheese were the choice of the children.",
    "Valerie voted for the veteran over the very vocal villain.",
    "The pilot was pleased with the plan to land at the airport.",
    "Father always parks the car far from the market.",
    "Ten tired teachers took the train to Toronto.",
    "Go get the garden hose and give the grass a good soak.",
    "Oh, I know, you told me about the old oak road.",
    "Whoever wrote this wonderful note wanted us to wait.",
    "Ann and Sam sat in the back of the black cab.",
    "Eat the sweet green beans and leave the peaches.",
    "The thunder and lightning frightened the young horses.",
    "Zebras and zoo keepers were busy at the bazaar.",
    "Maybe we should move the meeting to Monday morning.",
    "Bob bought a baby bottle and a bag of bread.",
    "Fifty feet of fine fabric fell off the shelf.",
    "Lucy looked at the blue moon through the window.",
    "Kate makes great cakes with maple syrup and cream.",
    "The usual visual illusion confused the casual viewer.",
    "Put the book on the wooden shelf beside the cook.",
    "Our house is an hour south of the mountain.",
    "The worker heard a bird chirp in the early morning.",
    "Both of them thought that the theatre was worth it.",
    "Every evening Steve reads a few pages of a novel.",
)

# Minimal sets: words that sound alike to a speech model but look different on the lips.
MINIMAL_SETS = (
    ("fin", "thin", "sin", "shin", "pin", "bin", "win", "tin"),
    ("bat", "pat", "mat", "fat", "vat", "that", "sat", "chat"),
    ("vet", "bet", "wet", "met", "pet", "set", "yet", "net"),
    ("map", "nap", "lap", "cap", "tap", "sap", "gap"),
    ("sip", "ship", "zip", "chip", "tip", "dip", "lip", "whip"),
    ("fine", "vine", "wine", "mine", "pine", "line", "shine", "nine"),
    ("fought", "thought", "bought", "caught", "taught", "sought", "brought"),
    ("feel", "veal", "wheel", "meal", "peel", "seal", "deal", "kneel"),
    ("boo", "moo", "few", "do", "who", "shoe", "two", "zoo"),
    ("pea", "bee", "me", "fee", "knee", "see", "tea", "she"),
    ("fan", "van", "man", "pan", "ban", "than", "tan", "can"),
    ("fear", "veer", "mere", "peer", "beer", "near", "sheer", "we're"),
    ("foam", "home", "roam", "poem", "moan", "phone", "bone", "tone"),
    ("fame", "same", "shame", "blame", "game", "name", "tame", "claim"),
    ("thumb", "sum", "mum", "bum", "come", "dumb", "gum", "plum"),
    ("mop", "pop", "shop", "top", "hop", "chop", "stop", "flop"),
    ("bore", "more", "four", "pour", "war", "shore", "door", "core"),
    ("mouth", "south", "pouch", "couch", "vouch", "ouch"),
    ("verse", "worse", "purse", "nurse", "first", "thirst"),
    ("rib", "rim", "rip", "riff", "rich", "rid", "rig"),
)

CARRIERS = (
    "Say {a} again.",
    "I said {a}, not {b}.",
    "The word {a} rhymes with {b}.",
    "Please write {a} and then {b} on the card.",
    "Is it {a} or {b}?",
    "{A} comes before {b} in my list.",
    "Now say {a}, {b} and {c} slowly.",
    "We heard {a} where she meant {b}.",
    "Type {a} twice, then type {b} once.",
    "The next word on the board is {a}.",
)

_DET = ("the", "a", "my", "your", "our", "every", "that", "this", "one", "some")
_ADJ = ("big", "small", "happy", "quiet", "purple", "brave", "shiny", "muddy", "famous", "sleepy", "wooden",
        "hungry", "gentle", "yellow", "ancient", "bright", "foolish", "smooth", "thirsty", "polite")
_NOUN = ("farmer", "pilot", "monkey", "teacher", "window", "violin", "fisherman", "jury", "zebra", "thief",
         "baker", "vehicle", "museum", "puppy", "mother", "neighbour", "wizard", "giraffe", "shepherd", "owl",
         "bishop", "cashier", "voyager", "mayor", "choir", "father", "boat", "machine", "village", "judge")
_VERB = ("found", "pushed", "watched", "measured", "painted", "followed", "visited", "thanked", "moved",
         "washed", "carried", "chased", "fixed", "opened", "bought", "threw", "shared", "warned", "joined", "loved")
_PLACE = ("near the bridge", "behind the mill", "on the beach", "at the office", "in the valley",
          "under the bed", "by the fountain", "through the woods", "over the fence", "beside the path",
          "inside the shop", "at the theatre", "in the vineyard", "on the roof", "across the bay")
_TIME = ("this morning", "last Thursday", "every evening", "before noon", "after the show", "in June",
         "at midnight", "on Monday", "yesterday", "twice a week", "in the fall", "at half past five")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _grammar_sentence(rng: np.random.Generator) -> str:
    def pick(options):
        return options[int(rng.integers(len(options)))]

    det1, det2 = pick(_DET), pick(_DET)
    adj1, noun1, verb, adj2, noun2 = pick(_ADJ), pick(_NOUN), pick(_VERB), pick(_ADJ), pick(_NOUN)
    if det1 == "a":
        det1 = _article(adj1)
    if det2 == "a":
        det2 = _article(adj2)
    words = f"{det1} {adj1} {noun1} {verb} {det2} {adj2} {noun2}"
    tail = [pick(_PLACE)] if rng.random() < 0.7 else []
    if rng.random() < 0.6:
        tail.append(pick(_TIME))
    sentence = " ".join([words] + tail)
    return sentence[0].upper() + sentence[1:] + ("?" if rng.random() < 0.1 else ".")


def _minimal_pair_sentence(rng: np.random.Generator) -> str:
    words = MINIMAL_SETS[int(rng.integers(len(MINIMAL_SETS)))]
    a, b, c = (words[i] for i in rng.choice(len(words), size=3, replace=False))
    carrier = CARRIERS[int(rng.integers(len(CARRIERS)))]
    return carrier.format(a=a, b=b, c=c, A=a.capitalize())


def make_sentences(count: int, seed: int) -> list[str]:
    """`count` sentences, deterministic for a seed: 35 % minimal pairs, 20 % hand-written, rest grammar;
    half of the short ones get a second minimal-pair phrase."""
    rng = np.random.default_rng([seed, 0x5E17])
    out = []
    for _ in range(count):
        u = rng.random()
        if u < 0.35:
            out.append(_minimal_pair_sentence(rng))
        elif u < 0.55:
            out.append(HANDWRITTEN[int(rng.integers(len(HANDWRITTEN)))])
        else:
            out.append(_grammar_sentence(rng))
        if len(out[-1].split()) < 7 and rng.random() < 0.5:   # lengthen short carrier clips
            out[-1] += " " + _minimal_pair_sentence(rng)
    return out
