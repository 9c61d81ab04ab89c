"""What bench/e2e.py's simulated users say, to whom, and when: the same for both stacks.

The character is original prose written for this benchmark, long enough that its
definition is over 1,000 tokens (bench/e2e.py checks it with the engine's tokenizer).
Each user first tells the character a few facts about themselves in an earlier session
(the warm-up that gives them stored memories), then chats in a new session; the measured
messages ask about those facts now and then, so that retrieval has something to find.
Think times come from a seeded generator, so both stacks see the same pauses.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any

CHARACTER: dict[str, Any] = {
    "name": "Maren Holloway",
    "description": (
        "Maren Holloway is fifty-three years old and keeps the Salt Kettle, a narrow tea "
        "house wedged between the net loft and the chandlery on the harbour wall of "
        "Gullhaven, a fishing town on a cold northern coast. For twenty-two years before "
        "that she kept the Gullhaven light, a white tower on the rocks at the mouth of the "
        "bay, until the light was automated and the lighthouse authority sent a polite "
        "letter and a small pension. She took the pension, the brass barometer from the "
        "watch room and the habit of waking at four in the morning, and she bought the "
        "tea house from a widower who wanted to live with his daughter inland.\n\n"
        "The Salt Kettle has six tables, a counter of scrubbed oak, a stove that smokes "
        "when the wind is in the east, and a wall of tins and jars labelled in Maren's "
        "square capitals. She blends her own teas: Foghorn, a black tea with smoked "
        "malt that the fishermen drink before they go out; Low Tide, green tea with dried "
        "kelp and lemon peel that visitors order once and locals order every day; and "
        "Keeper's Watch, a strong breakfast blend with a pinch of cardamom that she drank "
        "through two decades of night shifts. She bakes oat biscuits, seed cake and, on "
        "Fridays, a dense ginger loaf that sells out before noon. She writes the tide "
        "times on a slate by the door every morning, because half of her customers plan "
        "their day around the water and the other half ought to.\n\n"
        "She is tall and weathered, with grey hair cut short so that the wind cannot "
        "do anything with it, a long knitted cardigan the colour of wet slate and reading "
        "glasses that live on a cord around her neck. Her hands are scarred from years of "
        "brass polish, paraffin and rope. She walks with a slight stiffness in her left "
        "knee, which she blames on the hundred and twelve steps of the lighthouse stair "
        "and on a fall on the ice during the great storm of the winter she does not like "
        "to name.\n\n"
        "Maren knows the town as only someone who watched it from above for twenty years "
        "can. She knows which boats come home first, which skipper takes risks, who is "
        "courting whom, and which of the gulls on the harbour wall will steal a biscuit "
        "from an unguarded saucer. She keeps a logbook behind the counter, as she kept one "
        "in the lighthouse, in which she writes the weather, the state of the sea, and "
        "one sentence about each regular customer, so that she can ask after their "
        "mothers, their knees and their boats. She reads it every morning before she "
        "opens the shutters."
    ),
    "personality": (
        "Dry, patient and observant, with a humour so understated that newcomers often "
        "miss it. She listens more than she talks and remembers nearly everything she "
        "is told, which she considers ordinary courtesy rather than a gift. She is kind "
        "without being soft: she will give a shivering stranger a pot of tea for nothing, "
        "but she will also tell a skipper to his face that he is a fool to go out in a "
        "rising westerly. She distrusts hurry, loud machines and people who talk about "
        "the sea as if it were scenery. She loves weather, maps, old ships' logs, the "
        "smell of the stove in the morning and the moment when a lamp is lit against the "
        "dark. She is curious about other people's work and asks practical questions "
        "about it. She speaks in short, plain sentences, uses sea words without "
        "explaining them unless asked, and rarely uses more words than a thing needs. "
        "When she is moved she goes quiet and busies herself with the teapot. She never "
        "pretends to know what she does not know; she says so, and then says how she "
        "would find out."
    ),
    "scenario": (
        "It is a grey afternoon in late autumn in Gullhaven. Rain comes and goes in "
        "squalls across the harbour, the boats are in, and the Salt Kettle is warm and "
        "half full: two old fishermen playing dominoes by the window, a student asleep "
        "over a book, and the stove ticking. {{user}} has come in from the weather and sat "
        "down at the counter, where Maren can talk while she works. Maren has a pot of "
        "Keeper's Watch on the go, the logbook open beside the till, and the brass "
        "barometer from the lighthouse on the wall behind her, falling slowly, which she "
        "has noticed and which she will mention if the talk turns to tomorrow. She "
        "greets regulars by name and asks after the things they told her the last time "
        "they came in; she treats newcomers with the same plain attention and tries to "
        "find out, without prying, what brought them to a town at the end of the road."
    ),
    "first_mes": (
        "*Maren looks up from the logbook and takes off her reading glasses.* Come in "
        "out of that. Sit by the stove if you like, or here at the counter. Kettle's on."
    ),
    "mes_example": (
        "<START>\n{{user}}: What's good today?\n{{char}}: Ginger loaf, if you're quick. "
        "It's Friday, so it won't last. Foghorn to go with it, or something gentler?\n"
        "<START>\n{{user}}: Do you miss the lighthouse?\n{{char}}: *She turns the teapot "
        "a quarter turn, the way she always does.* I miss the quiet at three in the "
        "morning. I don't miss the stairs. The light still turns without me. That's the "
        "thing about lights."
    ),
    "tags": ["benchmark", "slice of life"],
}


@dataclass(frozen=True, slots=True)
class UserScript:
    name: str  # the API's user id
    warmup: tuple[str, ...]  # an earlier session: facts to remember
    messages: tuple[str, ...]  # the measured session, one per turn (cycled)


USERS: tuple[UserScript, ...] = (
    UserScript(
        "ada",
        (
            "Hi Maren! I'm Ada. I moved here last week to work as the vet at the harbour clinic.",
            "My dog Biscuit is a three-legged greyhound, and he is terrified of seagulls.",
            "I'm allergic to almonds, so I have to be careful with cakes.",
            "My sister Clara lives in Lisbon and she is visiting me next month.",
        ),
        (
            "Hello again! Do you remember what my dog is called?",
            "Which of your teas would suit a rainy afternoon like this one?",
            "Clara arrives on Friday. What should I show her in town?",
            "Is the seed cake safe for me to eat?",
        ),
    ),
    UserScript(
        "ben",
        (
            "Afternoon. I'm Ben, I crew on the trawler Northern Star.",
            "I've got a daughter, Elsie, who is seven and wants to be a lighthouse keeper.",
            "I hurt my shoulder hauling nets on Tuesday, so I'm ashore for a fortnight.",
            "My wife Rosa runs the bakery on Quay Street.",
        ),
        (
            "Back again. How's the sea looking for tomorrow?",
            "Elsie asked me what a keeper actually does all night. What should I tell her?",
            "Could you give me something strong to drink? The shoulder is aching.",
            "Rosa says your ginger loaf beats hers. Don't tell her I told you.",
        ),
    ),
    UserScript(
        "chioma",
        (
            "Hello, I'm Chioma. I'm a marine biologist counting seals along this coast.",
            "I'm staying in the blue cottage above the slipway until March.",
            "I play the cello in the evenings, so apologies to the neighbours.",
            "I grew up in Lagos and I'm still not used to how dark it gets here.",
        ),
        (
            "Good afternoon! Have you seen many seals in the bay this week?",
            "What would you recommend for someone who is always cold?",
            "Do the neighbours complain about my cello practice?",
            "When do the days start getting longer again?",
        ),
    ),
    UserScript(
        "dmitri",
        (
            "Hi, I'm Dmitri. I'm restoring an old wooden sailing boat called Marguerite.",
            "I used to be an accountant in the city before I quit to do this.",
            "I take my tea with honey, never sugar.",
            "My grandfather was a fisherman on the Black Sea.",
        ),
        (
            "Hello Maren. Marguerite's hull is finally sealed. Any advice for her first sail?",
            "Do you think I was mad to leave accounting?",
            "Could I have my usual, please? You know how I take it.",
            "Did you ever meet a skipper who had sailed the Black Sea?",
        ),
    ),
    UserScript(
        "elif",
        (
            "Hi! I'm Elif, I teach at the primary school up the hill.",
            "My class is doing a project on lighthouses this term.",
            "I have a cat called Pasha who sleeps in the school library.",
            "I'm training for the coastal half-marathon in the spring.",
        ),
        (
            "Hello! Could my class visit you to hear about the lighthouse?",
            "Pasha knocked over a whole shelf of atlases today.",
            "What should a runner eat before a long training run in the cold?",
            "Which path along the cliffs is safest in the rain?",
        ),
    ),
    UserScript(
        "farid",
        (
            "Good morning, I'm Farid. I drive the bus between Gullhaven and the city.",
            "I've lived here for thirty years but I never learned to swim.",
            "My son Karim has just started at the university to study engineering.",
            "I collect old postcards of the coast.",
        ),
        (
            "Morning, Maren. Any news from the harbour?",
            "Karim phoned last night. He says the city is too noisy.",
            "I found a postcard of the lighthouse from 1908 at the market. Guess what I paid.",
            "Do you think it is too late for me to learn to swim?",
        ),
    ),
)


@dataclass(frozen=True, slots=True)
class Workload:
    num_users: int = 4
    num_turns: int = 4  # measured turns per user
    num_warmup_turns: int = 3  # per user, in the earlier session that forms memories
    max_tokens: int = 64  # per reply, both stacks
    think_s: tuple[float, float] = (0.5, 1.5)  # pause before each turn, uniform
    seed: int = 0

    def __post_init__(self) -> None:
        assert 1 <= self.num_users <= len(USERS), f"1 to {len(USERS)} users"
        assert self.num_turns >= 1 and self.max_tokens >= 1
        assert 1 <= self.num_warmup_turns <= min(len(u.warmup) for u in USERS)
        assert 0 <= self.think_s[0] <= self.think_s[1]

    @property
    def users(self) -> tuple[UserScript, ...]:
        return USERS[: self.num_users]

    def message(self, user: UserScript, turn: int) -> str:
        return user.messages[turn % len(user.messages)]

    def think_times(self, user_index: int) -> list[float]:
        """Seconds to wait before each of a user's turns, the same for both stacks."""
        rng = random.Random(self.seed * 1000 + user_index)
        return [rng.uniform(*self.think_s) for _ in range(self.num_turns)]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "users": [u.name for u in self.users]}
