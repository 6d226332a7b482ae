"""Build the prompt sets of the embedded default model: `train.txt` and `heldout.txt` (one prompt per line).

    python examples/prompts/make_prompts.py        # rewrites both files (deterministic)

The prompts are short questions and instructions in the style of a chat assistant's everyday use, made from
hand-written templates and topic lists (written for this project, Apache-2.0 like the rest of it). Every topic
belongs to exactly one split: the held-out prompts ask about topics the training prompts never mention, so the
quality numbers in docs/quality.md measure answers to unseen questions, not recall of training answers.
"""

from __future__ import annotations

import random
from pathlib import Path

HERE = Path(__file__).parent
HELDOUT_EVERY = 8  # every 8th topic of each list goes to the held-out split

# (templates, topics): each topic is asked with one or two of its list's templates.
POOLS: dict[str, tuple[list[str], list[str]]] = {
    "concept": (
        ["What is {}?", "Explain {} in simple terms.", "Describe {} in one or two sentences.", "Briefly define {}."],
        ["photosynthesis", "gravity", "a volcano", "democracy", "inflation", "a black hole", "evolution",
         "the water cycle", "electricity", "a rainbow", "an atom", "the internet", "a vaccine", "climate change",
         "a computer program", "friction", "a solar eclipse", "recycling", "the immune system", "a calendar",
         "an earthquake", "a library", "magnetism", "a glacier", "the stock market", "a democracy's constitution",
         "a thermometer", "compost", "a budget", "an echo", "a telescope", "the moon's phases", "erosion",
         "a food chain", "a password", "a battery", "sound", "a map", "the heart", "a desert", "a microscope",
         "a hurricane", "an ecosystem", "a loan", "the alphabet", "a metaphor", "a fossil", "renewable energy",
         "a spreadsheet", "a compass", "the greenhouse effect", "a cell", "a noun", "a prime number",
         "a fraction", "a triangle", "a tide", "DNA", "a planet", "oxygen", "a tsunami", "an email",
         "a museum", "a bridge", "a thunderstorm", "an algorithm", "a vitamin", "a language", "a clock",
         "the sun", "a comet", "a river delta", "a coral reef", "a trade", "a tax", "a virus", "a muscle"],
    ),
    "tips": (
        ["Give three tips for {}.", "What are some good ways of {}?", "Give me two tips for {}."],
        ["staying healthy", "learning a new language", "saving money", "sleeping better", "studying for an exam",
         "keeping a plant alive", "writing a good email", "making new friends", "staying focused",
         "cooking rice", "running a first 5k", "keeping a room tidy", "reducing stress", "drinking more water",
         "learning to draw", "speaking in public", "travelling on a budget", "taking care of a dog",
         "waking up early", "reading more books", "staying safe online", "preparing for a job interview",
         "eating more vegetables", "learning to code", "planning a trip", "saving energy at home",
         "making a good first impression", "staying warm in winter", "keeping a diary", "learning to swim",
         "growing tomatoes", "taking better photos", "being on time", "remembering names",
         "writing a short story", "packing a suitcase", "starting a garden", "staying cool in summer",
         "working from home", "being a good listener", "teaching a child to read", "cleaning a kitchen"],
    ),
    "poem": (
        ["Write a haiku about {}.", "Write a short poem about {}.", "Write two lines of poetry about {}."],
        ["the sea", "autumn leaves", "the moon", "a cat", "rain", "the city at night", "a mountain", "snow",
         "the morning sun", "a river", "friendship", "a garden", "the wind", "a candle", "summer",
         "a lighthouse", "the stars", "a forest", "a cup of coffee", "spring flowers", "a bird", "the desert",
         "a storm", "an old tree", "the ocean waves", "a quiet morning", "a train journey", "winter",
         "a butterfly", "the sky", "a field of wheat", "a small boat", "the first snow", "a thunderstorm"],
    ),
    "name": (
        ["Name {}.", "List {}."],
        ["five fruits", "three colors", "four animals that live in the ocean", "three planets",
         "five vegetables", "three musical instruments", "four countries in Europe", "three kinds of trees",
         "five sports", "three famous painters", "four types of weather", "three programming languages",
         "five kitchen tools", "three mammals that can fly or glide", "four shapes", "three birds",
         "five things you find in a classroom", "three insects", "four seasons", "three flowers",
         "five jobs", "three dog breeds", "four units of length", "three ways to travel", "five drinks",
         "three board games", "four parts of a plant", "three rivers", "five emotions", "three metals",
         "four things you pack for a beach trip", "three breakfast foods", "five animals on a farm",
         "three primary colors", "four kinds of clouds", "three continents"],
    ),
    "difference": (
        ["What is the difference between {}?", "How are {} different?"],
        ["a virus and a bacterium", "weather and climate", "a lake and a sea", "a frog and a toad",
         "speed and velocity", "a city and a town", "an alligator and a crocodile", "a fruit and a vegetable",
         "a star and a planet", "a poem and a story", "hardware and software", "a noun and a verb",
         "tea and coffee", "rain and snow", "a rabbit and a hare", "a boat and a ship", "a hill and a mountain",
         "a comet and an asteroid", "a butterfly and a moth", "a dolphin and a shark", "a violin and a cello",
         "a monkey and an ape", "baking and frying", "an ocean and a sea", "a map and a globe",
         "saving and investing", "a watch and a clock", "a cafe and a restaurant", "a duck and a goose",
         "a road and a street", "a book and a magazine", "a river and a stream"],
    ),
    "howto": (
        ["How do I {}?", "What are the steps to {}?", "Explain how to {}."],
        ["boil an egg", "make a cup of tea", "tie a shoelace", "plant a seed", "write a thank-you note",
         "make a paper airplane", "change a light bulb", "make a sandwich", "wash my hands properly",
         "fold a shirt", "make pancakes", "brush my teeth well", "set a table", "make a smoothie",
         "clean a window", "start a conversation", "make a to-do list", "build a campfire safely",
         "read a map", "save a file on a computer", "water a houseplant", "make lemonade", "wrap a gift",
         "cook pasta", "sharpen a pencil", "take a screenshot", "sew a button", "make a bed",
         "feed a goldfish", "peel an orange", "make toast", "bake bread", "care for a cactus",
         "choose a ripe avocado"],
    ),
    "fact": (
        ["Tell me a fun fact about {}.", "Tell me something interesting about {}."],
        ["octopuses", "the moon", "honey", "elephants", "penguins", "the Eiffel Tower", "bananas", "owls",
         "the human brain", "sharks", "Mars", "bees", "giraffes", "chocolate", "the Pacific Ocean",
         "volcanoes", "koalas", "snowflakes", "dolphins", "the Great Wall of China", "spiders", "cats",
         "trees", "the Sahara", "whales", "tomatoes", "lightning", "ants", "Saturn", "horses", "crows",
         "the Amazon river", "rice", "frogs", "Jupiter", "diamonds"],
    ),
    "word": (
        ["What is the opposite of the word '{}'?", "Give a synonym for '{}'.", "Use the word '{}' in a sentence."],
        ["happy", "cold", "fast", "bright", "ancient", "generous", "quiet", "brave", "simple", "tiny", "begin",
         "strong", "honest", "early", "heavy", "polite", "empty", "wide", "gentle", "clever", "difficult",
         "calm", "rich", "sharp", "curious", "clean", "loud", "narrow", "friendly", "careful", "rare",
         "awake", "huge", "smooth", "weak", "shallow", "fresh", "proud", "lazy", "soft", "dark", "young",
         "thin", "warm", "true", "noisy", "tidy", "patient", "modern", "safe"],
    ),
    "capital": (
        ["What is the capital of {}?"],
        ["France", "Japan", "Italy", "Canada", "Spain", "Egypt", "Brazil", "Germany", "Australia", "India",
         "Mexico", "Kenya", "Norway", "Greece", "Portugal", "Argentina", "Sweden", "Ireland", "Poland",
         "Thailand", "Peru", "Finland", "Turkey", "Chile", "Austria", "Vietnam", "Morocco", "Denmark",
         "the United Kingdom", "China", "Russia", "the Netherlands", "Belgium", "Switzerland", "Cuba", "Nigeria"],
    ),
    "person": (
        ["Who was {}?", "What is {} known for?"],
        ["Albert Einstein", "Marie Curie", "William Shakespeare", "Leonardo da Vinci", "Isaac Newton",
         "Cleopatra", "Mozart", "Charles Darwin", "Ada Lovelace", "Galileo Galilei", "Napoleon Bonaparte",
         "Jane Austen", "Nelson Mandela", "Vincent van Gogh", "Nikola Tesla", "Abraham Lincoln",
         "Florence Nightingale", "Julius Caesar", "Beethoven", "Alan Turing", "Frida Kahlo", "Confucius",
         "Aristotle", "Mahatma Gandhi", "Neil Armstrong", "Pablo Picasso", "Thomas Edison", "Amelia Earhart",
         "Socrates", "Rosa Parks", "Johann Sebastian Bach", "Queen Victoria"],
    ),
    "why": (
        ["Why {}?", "Explain briefly: why {}?"],
        ["is the sky blue", "do leaves change color in autumn", "do we need sleep", "is the ocean salty",
         "do cats purr", "do we have seasons", "does ice float", "do birds migrate", "do onions make us cry",
         "is exercise good for us", "do stars twinkle", "does bread rise", "do we yawn", "is sugar bad for teeth",
         "do plants need sunlight", "does the moon change shape", "do we sweat", "is it colder on mountains",
         "do dogs wag their tails", "does metal feel cold", "do we dream", "do bees make honey",
         "is reading important", "do zebras have stripes", "do we get hiccups", "is water important for life",
         "do clouds float", "does thunder follow lightning", "do apples turn brown", "do we shiver"],
    ),
    "suggest": (
        ["Suggest a name for {}.", "Give me three name ideas for {}."],
        ["a pet cat", "a bakery", "a new board game", "a goldfish", "a coffee shop", "a robot", "a sailboat",
         "a book club", "a pet rabbit", "a band", "a small bookstore", "a hiking club", "a puppy",
         "a lemonade stand", "a garden", "a space station", "a cooking blog", "a detective character",
         "a pet parrot", "a soccer team", "a fantasy kingdom", "a flower shop", "a chess club", "a dragon"],
    ),
    "rewrite": (
        ["Rewrite this sentence to be more polite: {}", "Make this sentence more formal: {}",
         "Correct the grammar in this sentence: {}"],
        ["Give me the report now.", "I want a coffee.", "Close the door.", "Your idea is bad.",
         "Tell me where the station is.", "I can't come tomorrow.", "Send me the files.", "We is going home.",
         "She don't like apples.", "Move your car.", "This food is not good.", "Call me later.",
         "He go to school every day.", "Fix my computer.", "I didn't liked the movie.", "Be quiet.",
         "They was happy.", "Bring me some water.", "Answer my question.", "The meeting are at noon.",
         "Give back my book.", "I seen that film.", "Hurry up.", "Stop talking.", "We goes to the park.",
         "Show me the menu.", "He have two dogs.", "Clean your room.", "I needs help.", "Wait here."],
    ),
    "describe": (
        ["Write one sentence describing {}.", "Describe {} to a child.", "Write a short paragraph about {}."],
        ["a sunny beach", "a busy market", "a snowy village", "a rainy afternoon", "a library", "a farm",
         "a birthday party", "a mountain lake", "a train station", "a school playground", "a bakery",
         "a quiet forest", "a summer festival", "a fishing village", "a kitchen in the morning",
         "a city park", "a zoo", "a night sky", "a campfire", "a football match", "an old castle",
         "a museum", "a flower market", "a harbour", "a country road", "a thunderstorm at sea"],
    ),
    "math": (
        ["What is {}?", "Calculate {}."],
        ["2 + 2", "10 minus 3", "5 times 6", "100 divided by 4", "7 + 8", "9 times 9", "15 minus 7",
         "half of 50", "3 times 4", "20 + 22", "12 divided by 3", "a quarter of 100", "6 + 7", "8 times 5",
         "30 minus 12", "double 16", "11 + 11", "4 times 25"],
    ),
}


def split(pools=POOLS) -> tuple[list[str], list[str]]:
    """(train, heldout) prompts: each topic goes to one split and is asked with one or two templates."""
    rng = random.Random(0)
    train, heldout = [], []
    for templates, topics in pools.values():
        for i, topic in enumerate(topics):
            held = i % HELDOUT_EVERY == HELDOUT_EVERY - 1
            if held:  # one prompt per held-out topic
                chosen = [rng.choice(templates)]
            else:
                chosen = rng.sample(templates, min(2, len(templates)))
            (heldout if held else train).extend(t.format(topic) for t in chosen)
    return train, heldout


def main() -> None:
    train, heldout = split()
    assert not set(train) & set(heldout)
    (HERE / "train.txt").write_text("\n".join(train) + "\n")
    (HERE / "heldout.txt").write_text("\n".join(heldout) + "\n")
    print(f"{len(train)} train prompts, {len(heldout)} held-out prompts -> {HERE}")


if __name__ == "__main__":
    main()
