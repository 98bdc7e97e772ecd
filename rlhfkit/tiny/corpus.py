"""A project-made English corpus: a seeded template grammar for the offline ``tiny`` model.

Why a grammar and not a downloaded data set: the ``tiny`` model must train and run PPO with
nothing fetched from a hub, and its data must be reproducible bit for bit from a seed. The
sentences are short everyday English (reviews, diary entries, weather, food, films, people,
places, products), lower-case, with punctuation as separate tokens, e.g.
``"the movie was really wonderful and the actors were great ."``.

Sentiment is balanced on purpose. Each sentence draws a polarity (positive, negative, neutral)
and every evaluative slot is filled from the matching word list, built from words of the VADER
lexicon (``good``, ``wonderful``, ``awful``, ``boring`` …) for the polar lists and from words
outside it for the neutral ones. A model warm-started on this corpus therefore continues a
neutral opening (``"the movie was"``) positively, negatively or neutrally about equally often,
which leaves a PPO run with a sentiment reward room to move the mean.

Grammar notation: a template is a string of words and ``{slot}`` references. A slot whose
name ends in ``_S`` takes the sentence's polarity (``adj_S`` → ``adj_pos`` / ``adj_neg`` /
``adj_neu``); ``_O`` takes the opposite polarity (contrast clauses after ``but``). An
underscore inside a word list entry stands for a space (``ice_cream`` → ``ice cream``).

Bump :data:`CORPUS_VERSION` whenever the output for a given seed changes: the warm-start
cache is keyed on it.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Literal

Polarity = Literal["pos", "neg", "neu"]

CORPUS_VERSION = 1
"""Version of the grammar's output; part of the warm-start cache key."""

POLARITIES: tuple[Polarity, ...] = ("pos", "neg", "neu")
_OPPOSITE: dict[str, str] = {"pos": "neg", "neg": "pos"}


def _w(text: str) -> list[str]:
    """Split a word list written as one string; ``_`` inside an entry stands for a space."""
    return [item.replace("_", " ") for item in text.split()]


# --------------------------------------------------------------------------- word lists
# Polar lists use VADER lexicon words; neutral lists avoid them (checked by the unit tests).
_LEX: dict[str, list[str]] = {
    # general evaluative adjectives
    "adj_pos": _w("good great wonderful excellent amazing lovely nice beautiful fantastic perfect brilliant "
                  "superb awesome enjoyable pleasant charming delightful impressive fun terrific marvelous "
                  "splendid outstanding fabulous magnificent glorious cheerful exciting interesting "
                  "fascinating stunning"),
    "adj_neg": _w("bad awful terrible horrible boring dull disappointing poor dreadful annoying unpleasant "
                  "miserable lame stupid ugly pathetic depressing frustrating painful useless worthless "
                  "ridiculous disgusting nasty sad dreary"),
    "adj_neu": _w("long short quiet busy loud old new small big simple different ordinary normal typical "
                  "expensive cheap late early crowded slow quick familiar modern traditional unusual "
                  "formal fancy"),
    "adv_ly_pos": _w("beautifully wonderfully perfectly nicely brilliantly"),
    "adv_ly_neg": _w("badly terribly horribly"),
    "adv_ly_neu": _w("slowly quickly early late suddenly quietly"),
    "noun_pos": _w("masterpiece success treat joy delight pleasure"),
    "noun_neg": _w("disaster mess failure waste_of_time"),
    "noun_neu": _w("remake sequel long_story copy"),
    # food
    "food_adj_pos": _w("delicious good great wonderful excellent amazing lovely nice perfect fresh superb "
                       "awesome fantastic terrific yummy heavenly"),
    "food_adj_neg": _w("awful terrible disgusting bad horrible gross nasty poor dreadful bland_and_awful "
                       "greasy_and_gross"),
    "food_adj_neu": _w("hot cold spicy salty sour crunchy soft tasty plain filling small big thick thin "
                       "chewy crispy lukewarm cheap expensive smoky creamy lemony"),
    # people
    "person_adj_pos": _w("kind friendly helpful funny smart clever generous honest cheerful sweet charming "
                         "lovely nice wonderful great brilliant thoughtful caring gentle brave"),
    "person_adj_neg": _w("rude lazy annoying angry cruel stupid boring selfish arrogant unpleasant "
                         "dishonest nasty unfriendly bitter hostile careless"),
    "person_adj_neu": _w("tall quiet busy young old late early away hungry sleepy polite patient at_home "
                         "in_the_kitchen at_work"),
    # places
    "place_adj_pos": _w("beautiful lovely nice wonderful clean comfortable charming peaceful perfect great "
                        "amazing pleasant gorgeous stunning"),
    "place_adj_neg": _w("dirty ugly awful terrible horrible depressing bad gloomy dreadful "
                        "unpleasant smelly_and_dirty disgusting shabby_and_dirty"),
    "place_adj_neu": _w("big small crowded quiet busy old new modern far_away close_by expensive cheap "
                        "narrow wide dark tall"),
    # weather
    "weather_adj_pos": _w("sunny bright lovely beautiful pleasant perfect nice gorgeous wonderful glorious "
                          "fantastic great"),
    "weather_adj_neg": _w("awful terrible gloomy miserable horrible nasty dreadful bad dreary depressing "
                          "stormy_and_awful"),
    "weather_adj_neu": _w("cold cloudy windy wet dry humid foggy chilly mild hot typical"),
    # feelings
    "feel_pos": _w("happy glad excited thrilled grateful proud relaxed cheerful lucky delighted "
                   "pleased calm joyful hopeful"),
    "feel_neg": _w("sad upset angry tired lonely bored disappointed worried annoyed nervous miserable "
                   "sick frustrated stressed unhappy"),
    "feel_neu": _w("hungry sleepy busy quiet at_home thirsty in_a_hurry"),
    # verbs of liking
    "verb_pos": _w("love like enjoy adore appreciate"),
    "verb_neg": _w("hate dislike despise"),
    "verb_neu": _w("remember know noticed"),
    "verbs_pos": _w("loves likes enjoys adores"),
    "verbs_neg": _w("hates dislikes despises"),
    "verbs_neu": _w("talks_about reads_about is_learning teaches studies"),
    "verbed_pos": _w("loved liked enjoyed adored appreciated"),
    "verbed_neg": _w("hated disliked despised regretted"),
    "verbed_neu": _w("watched saw remembered noticed visited tried finished"),
    # superlatives
    "super_pos": _w("best nicest funniest greatest"),
    "super_neg": _w("worst ugliest saddest dullest"),
    "super_neu": _w("longest shortest oldest newest quietest biggest smallest"),
    # whole experiences
    "time_pos": _w("a_great_time a_wonderful_time fun a_lovely_evening a_good_time an_amazing_day "
                   "a_fantastic_weekend a_nice_chat"),
    "time_neg": _w("a_terrible_time an_awful_day a_bad_time a_horrible_evening a_miserable_weekend "
                   "a_boring_afternoon an_awful_fight"),
    "time_neu": _w("a_long_day a_normal_day dinner lunch a_short_walk a_quiet_evening a_long_talk"),
}

_FILL: dict[str, list[str]] = {
    "adv": [""] * 6 + _w("really_ very_ so_ quite_ extremely_ incredibly_ absolutely_ totally_ "
                         "rather_ somewhat_ especially_ unusually_"),
    "opener": [""] * 6 + _w("yesterday_ today_ last_night_ overall_ i_think_ i_guess_ in_my_opinion_ "
                            "to_me_ for_me_ actually_"),
    "time_past": _w("yesterday last_night this_morning last_week last_weekend on_monday on_tuesday "
                    "on_wednesday on_thursday on_friday on_saturday on_sunday last_month last_summer "
                    "last_winter in_the_afternoon after_work after_school two_days_ago a_week_ago "
                    "last_year in_january in_march in_may in_july in_september in_november"),
    "day_name": _w("yesterday today monday tuesday wednesday thursday friday saturday sunday"),
    "season": _w("spring summer autumn winter the_fall january february march april may june july "
                 "august september october november december"),
    "daypart": _w("morning afternoon evening night day weekend week"),
    "meal": _w("breakfast lunch dinner dessert a_snack brunch"),
    "num": _w("two three four five six seven eight nine ten eleven twelve fifteen twenty thirty forty "
              "fifty sixty"),
    # films, books, music
    "movie": _w("movie film show series episode documentary cartoon musical drama western sequel "
                "trailer ballet opera miniseries sitcom animation mystery road_movie "
                "period_drama spy_movie courtroom_drama"),
    "movie_part_sg": _w("plot ending story script dialogue soundtrack music acting camera_work first_half "
                        "second_half opening_scene final_scene lead_actor lead_actress main_character "
                        "director cast pace lighting editing voice_acting narrator"),
    "movie_part_pl": _w("actors characters songs scenes costumes visuals dancers dialogues action_scenes "
                        "car_chases landscapes effects"),
    "book": _w("book story poem magazine article comic biography cookbook textbook essay report "
               "newspaper blog_post short_story memoir guidebook diary_entry column"),
    "book_part": _w("writing plot first_chapter last_chapter ending cover main_character style language "
                    "introduction translation illustrations"),
    "music": _w("song album record playlist concert single"),
    "music_part_pl": _w("songs lyrics guitar_parts drums vocals melodies"),
    "band": _w("my_favourite_band that_new_band a_local_band the_jazz_band an_old_rock_band the_choir "
               "the_orchestra that_singer my_cousin"),
    "topic": _w("history cooking space the_ocean a_small_town two_brothers a_family a_dog a_cat a_robot "
                "a_young_doctor a_football_team a_painter a_singer an_old_house a_train_journey "
                "a_detective a_teacher the_moon a_farmer a_pilot a_village a_fisherman the_mountains "
                "a_school the_city a_chef an_island a_scientist a_horse trains birds music gardens "
                "the_desert a_bakery a_sailor an_artist a_nurse a_king a_queen volcanoes dinosaurs "
                "the_weather an_explorer a_lighthouse a_submarine a_circus a_journalist an_astronaut "
                "a_museum the_railway the_arctic the_jungle bees whales penguins elephants a_carpenter "
                "a_tailor a_postman an_inventor a_mathematician a_lawyer a_bus_driver"),
    # food
    "dish": _w("soup pizza pasta salad bread cake coffee tea burger sandwich steak chicken fish rice "
               "curry pie cheese chocolate ice_cream omelette risotto lasagna sushi stew porridge "
               "toast dessert chili tart lemonade juice milkshake wine beer bagel croissant "
               "ramen paella goulash burrito kebab hummus yogurt granola cereal smoothie espresso "
               "cappuccino latte cheesecake brownie pudding custard quiche casserole salmon tuna "
               "shrimp lobster lamb pork beef turkey duck tofu spaghetti ravioli gnocchi falafel "
               "couscous cornbread gravy mashed_potato broccoli spinach cabbage lettuce cucumber "
               "pho dal biryani tempura dim_sum bruschetta focaccia minestrone chowder meatloaf "
               "jambalaya enchilada nachos guacamole salsa sorbet gelato tiramisu "
               "baklava strudel fudge pretzel waffle crepe muesli oatmeal cocoa cider"),
    "dish_pl": _w("pancakes noodles fries cookies apples tomatoes potatoes eggs beans waffles "
                  "tacos muffins carrots mushrooms grapes strawberries oranges vegetables sausages "
                  "bananas lemons peaches pears plums cherries blueberries onions peppers olives "
                  "almonds crackers biscuits donuts scones meatballs chips pickles"),
    "dish_a": _w("soup pizza pasta a_salad cake a_burger a_sandwich steak chicken fish rice "
                 "curry pie pancakes noodles sushi tacos an_omelette stew lasagna ramen a_burrito "
                 "a_kebab spaghetti salmon paella"),
    "food_place": _w("restaurant cafe bakery diner pub food_truck pizza_place noodle_shop canteen "
                     "sushi_bar steakhouse tea_room burger_joint bistro taco_stand"),
    "rest_part_sg": _w("service waiter waitress staff menu atmosphere view chef wine_list music bill "
                       "decor kitchen"),
    "rest_part_pl": _w("portions prices tables chairs drinks desserts waiters plates"),
    # places and travel
    "place": _w("hotel beach park museum station airport library zoo mall market garden lake river "
                "forest mountain island bridge castle church gym pool stadium theater cinema campsite "
                "apartment house room neighborhood street office shop store bookstore hostel harbor "
                "village town square gallery aquarium cathedral temple palace tower lighthouse "
                "farm vineyard waterfall valley canyon cave cliff hill meadow pier marina "
                "playground courtyard plaza boulevard motel cabin cottage pharmacy post_office "
                "bus_depot train_station swimming_pool ice_rink bowling_alley car_park"),
    "hotel_part_pl": _w("rooms beds showers towels windows stairs pillows hallways"),
    "hotel_part_sg": _w("room bed shower breakfast pool view bathroom wifi balcony elevator"),
    "city": _w("paris london rome berlin tokyo madrid lisbon vienna prague dublin boston chicago "
               "seattle toronto sydney oslo athens cairo mumbai denver amsterdam brussels munich "
               "zurich geneva venice florence naples milan barcelona seville porto krakow budapest "
               "helsinki stockholm copenhagen edinburgh glasgow montreal vancouver melbourne "
               "auckland istanbul bangkok singapore seoul osaka kyoto lima bogota havana marseille lyon "
               "hamburg cologne rotterdam antwerp bergen tallinn riga vilnius dubrovnik split "
               "valencia bilbao granada malaga palermo verona bologna salzburg innsbruck"),
    "home": _w("house apartment school office hotel street"),
    "transport": _w("bus train plane boat ferry subway tram"),
    "weather_thing": _w("wind rain air sea sun snow"),
    # people
    "person": _w("my_sister my_brother my_mother my_father my_mom my_dad my_aunt my_uncle "
                 "my_cousin my_grandmother my_grandfather my_neighbor my_roommate my_boss my_coworker "
                 "my_teacher the_teacher the_doctor the_nurse the_driver the_waiter the_manager "
                 "the_new_student our_guide the_old_man the_woman_next_door my_classmate my_colleague "
                 "my_partner my_wife my_husband my_boyfriend my_girlfriend "
                 "anna tom maria james sara david emma lucas nina paul kate john lisa mark julia peter "
                 "laura alex sam ben sophie daniel olivia leo noah lily jack oscar ruby max chloe "
                 "henry ella adam zoe hannah ethan isabel liam amelia owen clara felix nora hugo "
                 "alice victor irene simon rosa martin eva luke marta ivan elena carlos lucia omar "
                 "fatima hassan aisha raj priya chen wei yuki kenji george harry sophia charlotte "
                 "william lucy arthur freya isaac matilda thomas rachel andrew helen robert susan "
                 "michael karen steven diana frank nadia pablo ines diego sofia mateo valentina "
                 "tariq leila ahmed yasmin ravi anita kofi amara jonas greta lars ingrid bruno carla "
                 "dmitri olga pierre margot giulia marco stefan petra tomas agnes rafael camila "
                 "jamal zara kwame ama tunde ngozi arjun meera hiro akiko minh linh mei jin"),
    "family": _w("mother father mom dad sister brother aunt uncle cousin grandmother grandfather "
                 "roommate neighbor son daughter nephew niece"),
    "hobby": _w("cooking swimming running painting reading singing gardening hiking cycling baking "
                "dancing knitting fishing camping chess tennis football skiing surfing climbing "
                "sailing rowing golf photography pottery sewing drawing yoga jogging"),
    "learn": _w("cook swim drive paint draw sing knit ski skate sew dance surf bake juggle type "
                "code speak_french speak_spanish speak_german speak_italian speak_japanese"),
    "job": _w("teacher doctor nurse driver chef baker farmer pilot lawyer engineer architect "
              "plumber electrician carpenter mechanic gardener librarian journalist photographer "
              "designer programmer accountant dentist pharmacist cashier waiter firefighter "
              "painter musician scientist translator tailor banker"),
    "subject": _w("math biology chemistry physics geography art music english spanish french "
                  "german economics philosophy computer_science literature"),
    "sport": _w("football basketball baseball tennis hockey volleyball rugby cricket golf badminton"),
    "instrument": _w("piano guitar violin drums flute cello trumpet saxophone clarinet harp"),
    "color": _w("red blue green yellow black white brown orange purple pink silver"),
    "clothing": _w("jacket coat shirt dress sweater scarf hat skirt belt cap hoodie blouse suit tie "
                   "raincoat vest"),
    "clothing_pl": _w("shoes boots jeans trousers socks gloves sandals sneakers shorts pajamas"),
    "thing": _w("lamp mirror clock vase rug blanket pillow kettle toaster mug bowl plate pan pot "
                "spoon fork knife basket candle frame shelf drawer curtain towel bucket ladder "
                "hammer broom notebook pencil pen stapler calculator envelope stamp map radio "
                "teapot jar bottle box wallet purse key lock torch compass globe puzzle kite "
                "chessboard telescope guitar_case sketchbook diary calendar poster painting"),
    "room": _w("kitchen bedroom bathroom garage attic basement hallway living_room study"),
    "flower_pl": _w("roses tulips daisies sunflowers lilies orchids violets poppies"),
    "nature": _w("river hill lake forest field road bridge fence pond beach"),
    # things and events
    "product": _w("phone laptop camera tablet watch printer keyboard speaker tv fridge oven blender "
                  "vacuum car bike scooter backpack jacket sofa chair desk bed lamp mattress umbrella "
                  "suitcase tent kettle toaster microwave dishwasher heater monitor router "
                  "headset charger drill"),
    "product_part": _w("battery screen price design sound build_quality color size shipping delivery "
                       "packaging manual customer_service material handle"),
    "event": _w("wedding trip game match meeting class lecture exam interview conference workshop "
                "flight train_ride bus_ride hike picnic dinner lunch breakfast concert weekend day week "
                "tour show ceremony parade rehearsal seminar course graduation reunion"),
    "workplace": _w("work school the_office the_shop the_hospital the_library the_factory the_bank"),
    "animal": _w("dog cat horse bird rabbit puppy kitten parrot hamster goat cow sheep pig duck "
                 "goose owl fox deer squirrel frog turtle mouse donkey chicken"),
    "weekday": _w("mondays tuesdays wednesdays thursdays fridays saturdays sundays weekends"),
    "country": _w("france spain italy germany portugal greece ireland scotland norway sweden finland "
                  "denmark iceland poland austria switzerland belgium holland japan korea china india "
                  "thailand vietnam mexico peru chile argentina brazil canada egypt morocco kenya "
                  "australia turkey croatia estonia latvia hungary romania bulgaria serbia slovenia "
                  "jordan nepal indonesia malaysia colombia cuba jamaica ghana nigeria tanzania"),
    "chore": _w("washed_the_dishes cleaned_the_windows fixed_the_fence painted_the_door "
                "watered_the_plants mowed_the_lawn fed_the_cat walked_the_dog folded_the_laundry "
                "ironed_my_shirts took_out_the_bins swept_the_floor repaired_the_roof "
                "sorted_the_mail vacuumed_the_stairs tidied_my_desk packed_my_bag "
                "baked_some_bread made_soup wrote_some_letters paid_the_bills "
                "changed_the_sheets called_my_parents"),
    "material": _w("wooden glass stone metal plastic woollen cotton leather silk paper copper ceramic "
                   "bamboo marble"),
    "tree": _w("oak pine birch maple willow chestnut cherry apple palm olive elm cedar"),
    "board_game": _w("chess cards monopoly scrabble dominoes checkers backgammon charades bingo"),
    "vehicle": _w("van truck taxi tractor motorbike bicycle minibus ambulance caravan"),
    "errand": _w("went_shopping went_swimming went_to_the_bank went_to_the_dentist visited_my_aunt "
                 "bought_groceries returned_some_books picked_up_a_parcel got_a_haircut "
                 "had_a_checkup renewed_my_passport washed_the_car"),
    "wild_animal": _w("fox deer owl eagle hedgehog badger swan crane seal dolphin otter beaver "
                      "moose bear wolf hawk crow"),
}

# Templates used for every polarity (neutral sentences fill the ``_S`` slots from the ``_neu`` lists).
_TEMPLATES: list[str] = [
    # films, books, music
    "{opener}the {movie} was {adv}{adj_S} .",
    "{opener}the {movie} was {adv}{adj_S} and the {movie_part_pl} were {adv}{adj_S} .",
    "i think the {movie} was {adv}{adj_S} .",
    "we watched a {movie} {time_past} and it was {adv}{adj_S} .",
    "i {verbed_S} the {movie} , the {movie_part_sg} was {adv}{adj_S} .",
    "the {movie_part_sg} of the {movie} was {adv}{adj_S} .",
    "the {movie_part_pl} in this {movie} were {adv}{adj_S} .",
    "this is the {super_S} {movie} i have ever seen .",
    "{person} said that the {movie} was {adv}{adj_S} .",
    "the {movie} about {topic} was {adv}{adj_S} .",
    "the {book} about {topic} was {adv}{adj_S} .",
    "the {book_part} of this {book} is {adv}{adj_S} .",
    "i read the {book} on the {transport} and it was {adv}{adj_S} .",
    "the new {music} by {band} is {adv}{adj_S} .",
    "i {verbed_S} the {music_part_pl} on that {music} .",
    "{person} thinks the {music} is {adv}{adj_S} .",
    # food
    "{opener}the {dish} was {adv}{food_adj_S} .",
    "the {dish} at the {food_place} was {adv}{food_adj_S} .",
    "i think the {dish} tasted {adv}{food_adj_S} today .",
    "we had {dish_a} for {meal} and it was {adv}{food_adj_S} .",
    "the {dish_pl} were {adv}{food_adj_S} and the {rest_part_sg} was {adv}{adj_S} .",
    "the {rest_part_sg} at the {food_place} was {adv}{adj_S} .",
    "the {rest_part_pl} at this {food_place} are {adv}{adj_S} .",
    "my {family} made {dish_a} and it tasted {adv}{food_adj_S} .",
    "i {verb_S} the {dish} at this {food_place} .",
    "{time_past} i had {dish_a} at the {food_place} and it was {adv}{food_adj_S} .",
    # places and travel
    "{opener}the {place} was {adv}{place_adj_S} .",
    "our trip to {city} was {adv}{adj_S} .",
    "the food in {country} was {adv}{food_adj_S} .",
    "our stay in {country} was {adv}{adj_S} .",
    "the {place} near our {home} is {adv}{place_adj_S} .",
    "we stayed at a {adv}{place_adj_S} hotel in {city} .",
    "the {hotel_part_sg} was {adv}{place_adj_S} and the {hotel_part_pl} were {adv}{place_adj_S} .",
    "{time_past} we went to the {place} and it was {adv}{place_adj_S} .",
    "the {place} in {city} is {adv}{place_adj_S} .",
    "the {transport} to {city} was {adv}{adj_S} .",
    # weather
    "the weather {time_past} was {adv}{weather_adj_S} .",
    "it was a {adv}{weather_adj_S} {daypart} .",
    "{time_past} the sky was {adv}{weather_adj_S} and the {weather_thing} was {adv}{adj_S} .",
    "the weather in {city} is {adv}{weather_adj_S} in {season} .",
    "{opener}the weather is {adv}{weather_adj_S} today .",
    # people
    "{person} is {adv}{person_adj_S} .",
    "i think {person} is a {adv}{person_adj_S} person .",
    "{person} told me that the {event} was {adv}{adj_S} .",
    "my {family} {verbs_S} {hobby} .",
    "the people at the {place} were {adv}{person_adj_S} .",
    "our new neighbor is {adv}{person_adj_S} .",
    # diary
    "today i felt {adv}{feel_S} .",
    "i was {adv}{feel_S} when {person} called me .",
    "{day_name} was a {adv}{adj_S} day .",
    "this week has been {adv}{adj_S} .",
    "my day at {workplace} was {adv}{adj_S} .",
    "i felt {adv}{feel_S} after the {event} .",
    "{person} and i had {time_S} at the {place} .",
    "my {animal} looked {adv}{feel_S} this morning .",
    # products
    "the {product} i bought is {adv}{adj_S} .",
    "the {product_part} of this {product} is {adv}{adj_S} .",
    "i {verb_S} my new {product} .",
    "the {product} arrived {time_past} and the {product_part} was {adv}{adj_S} .",
    "{opener}the {product} was {adv}{adj_S} .",
    # events
    "the {event} was {adv}{adj_S} .",
    "the {event} {time_past} was {adv}{adj_S} and everyone was {adv}{feel_S} .",
    "i had {time_S} at the {event} .",
    "{opener}the {event} with {person} was {adv}{adj_S} .",
    "the {movie} ended {adv_ly_S} .",
    "the {movie} was a {noun_S} .",
    "{time_past} the {event} went {adv_ly_S} .",
    # school, work, hobbies
    "the {subject} class was {adv}{adj_S} today .",
    "{opener}the {subject} exam was {adv}{adj_S} .",
    "{person} works as a {job} and the job is {adv}{adj_S} .",
    "the {sport} game {time_past} was {adv}{adj_S} .",
    "{person} is learning to {learn} and it is {adv}{adj_S} .",
    "the {instrument} lesson was {adv}{adj_S} .",
    "my new {color} {clothing} is {adv}{adj_S} .",
    "the {clothing_pl} i bought {time_past} are {adv}{adj_S} .",
    "the {flower_pl} in the garden look {adv}{adj_S} .",
    "the {room} in our new house is {adv}{place_adj_S} .",
    "the walk along the {nature} was {adv}{adj_S} .",
    "the {material} {thing} i bought is {adv}{adj_S} .",
    "the game of {board_game} with {person} was {adv}{adj_S} .",
    "the ride in the old {vehicle} was {adv}{adj_S} .",
    "the {tree} trees by the {nature} look {adv}{adj_S} in {season} .",
]

# Polar-only templates: they read oddly with a neutral word in the slot.
_POLAR: list[str] = [
    "{person} was {adv}{person_adj_S} to me {time_past} .",
    "{time_past} i went to the {place} with {person} and we had {time_S} .",
    "what a {adj_S} {movie} !",
    "{opener}i {verb_S} this {product} .",
    "i {verb_S} {hobby} with {person} on {weekday} .",
    "my {family} says the {job} at the {place} was {person_adj_S} .",
]

# Contrast templates for polar sentences only: the clause after "but" carries the polarity.
_CONTRAST: list[str] = [
    "the {dish} was {adv}{food_adj_O} but the {rest_part_sg} was {adv}{adj_S} .",
    "the {movie} was {adv}{adj_O} but the {movie_part_sg} was {adv}{adj_S} .",
    "the {place} was {adv}{place_adj_O} but the {hotel_part_pl} were {adv}{place_adj_S} .",
    "the {product} looks {adj_O} but the {product_part} is {adv}{adj_S} .",
    "i thought the {book} would be {adj_O} , but it was {adv}{adj_S} .",
    "the weather was {weather_adj_O} but the {event} was {adv}{adj_S} .",
]

# Negated templates for polar sentences: "not <opposite>" reads (and scores) as the polarity.
_NEGATED: list[str] = [
    "the {movie} was not {adj_O} at all .",
    "the {dish} was not {food_adj_O} .",
    "to me , the {event} was not very {adj_O} .",
    "{person} is not {person_adj_O} .",
]

# Neutral-only templates: statements with no evaluation at all.
_NEUTRAL: list[str] = [
    "the {movie} is about {topic} .",
    "{time_past} i went to the {place} with {person} .",
    "we had {dish_a} for {meal} {time_past} .",
    "the {place} opens at {num} in the morning .",
    "{person} lives in {city} now .",
    "i read a {book} about {topic} on the {transport} .",
    "the {event} starts at {num} in the evening .",
    "i need to buy {dish_pl} and {dish_pl} .",
    "my {family} is {num} years old .",
    "we took the {transport} to {city} {time_past} .",
    "the {product} costs {num} dollars .",
    "{person} and i walked to the {place} after {meal} .",
    "the weather in {city} changes in {season} .",
    "my {family} has a {animal} and a {animal} .",
    "the {event} lasted {num} hours .",
    "{time_past} i {chore} and {chore} .",
    "we flew to {country} in {season} .",
    "{person} grew up in {country} and moved to {city} .",
    "after {meal} i {chore} .",
    "{time_past} i {errand} and then i {errand} .",
    "my {family} bought a {material} {thing} at the market .",
    "the {tree} trees in the park are very old .",
    "we had a game of {board_game} in the {room} after {meal} .",
    "a {color} {vehicle} was parked outside the {place} .",
    "{person} drove the {vehicle} to {city} {time_past} .",
    "{person} works as a {job} in {city} .",
    "i bought a {color} {clothing} and {clothing_pl} at the {place} .",
    "we saw a {wild_animal} near the {nature} {time_past} .",
    "my {family} is learning to {learn} .",
    "{person} has {instrument} lessons on {weekday} .",
    "we have a {subject} test on {season} {num} .",
    "i put the {thing} in the {room} next to the {thing} .",
    "the {flower_pl} in the garden are {color} .",
    "our {sport} team meets after school .",
    "{person} gave me a {color} {thing} for my room .",
    "the {wild_animal} lives near the {nature} .",
    "i cleaned the {room} and found an old {thing} .",
]

_SLOT = re.compile(r"\{(\w+)\}")


def _expand(template: str, polarity: Polarity, rng: random.Random) -> str:
    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.endswith("_S"):
            return rng.choice(_LEX[f"{name[:-2]}_{polarity}"])
        if name.endswith("_O"):
            return rng.choice(_LEX[f"{name[:-2]}_{_OPPOSITE[polarity]}"])
        return rng.choice(_FILL[name])

    return _SLOT.sub(fill, template)


_CONSONANT_SOUND = ("one", "once", "uni", "use", "usu")  # "a useful", "a unique": vowel letter, "y"/"w" sound


def _fix_articles(words: list[str]) -> list[str]:
    """``a`` / ``an`` by the next word's first sound (good enough for this vocabulary)."""
    out = list(words)
    for i, nxt in enumerate(out[1:]):
        if out[i] in ("a", "an"):
            vowel = nxt[0] in "aeiou" and not nxt.startswith(_CONSONANT_SOUND) or nxt.startswith("hour")
            out[i] = "an" if vowel else "a"
    return out


def sentence(rng: random.Random, polarity: Polarity | None = None) -> tuple[str, Polarity]:
    """One sentence and its intended polarity (drawn uniformly when not given)."""
    pol: Polarity = rng.choice(POLARITIES) if polarity is None else polarity
    if pol == "neu":
        pool = _NEUTRAL if rng.random() < 0.35 else _TEMPLATES
    else:
        r = rng.random()
        pool = _CONTRAST if r < 0.08 else _NEGATED if r < 0.13 else _POLAR if r < 0.2 else _TEMPLATES
    text = _expand(rng.choice(pool), pol, rng)
    words = _fix_articles(text.split())
    if pol != "neu" and words[-1] == "." and rng.random() < 0.1:
        words[-1] = "!"
    return " ".join(words), pol


def iter_sentences(seed: int = 0) -> Iterator[tuple[str, Polarity]]:
    """An endless, seeded stream of ``(sentence, polarity)``."""
    rng = random.Random(seed)
    while True:
        yield sentence(rng)


def corpus(n: int, seed: int = 0) -> list[str]:
    """``n`` sentences from the grammar; the same ``(n, seed)`` always gives the same list."""
    stream = iter_sentences(seed)
    return [next(stream)[0] for _ in range(n)]


@lru_cache(maxsize=1)
def vocabulary() -> tuple[str, ...]:
    """Every word the grammar can produce (sorted), including punctuation tokens."""
    words: set[str] = {".", "!", ",", "a", "an"}
    for template in _TEMPLATES + _POLAR + _CONTRAST + _NEGATED + _NEUTRAL:
        words.update(w for w in _SLOT.sub(" ", template).split())
    for entries in list(_LEX.values()) + list(_FILL.values()):
        for entry in entries:
            words.update(entry.split())
    return tuple(sorted(words))


# Words after which an opening is no longer sentiment-neutral: VADER's negations and "but".
_STOP_WORDS = frozenset({"not", "never", "but", "without", "nothing", "none", "nor"})


@lru_cache(maxsize=1)
def polar_words() -> frozenset[str]:
    """Words that carry sentiment in this grammar: everything in a positive or negative list."""
    words: set[str] = set()
    for name, entries in _LEX.items():
        if not name.endswith("_neu"):
            for entry in entries:
                words.update(entry.split())
    return frozenset(words)


def neutral_opening(text: str, rng: random.Random, min_words: int = 2, max_words: int = 8) -> str | None:
    """A random-length opening of ``text`` that stops before its first sentiment-bearing word.

    Returns None when the sentiment-free head of the sentence is shorter than ``min_words``.
    """
    stop = polar_words() | _STOP_WORDS
    head: list[str] = []
    for word in text.split():
        if word in stop or word in (".", "!", ","):
            break
        head.append(word)
    if len(head) < min_words:
        return None
    return " ".join(head[: rng.randint(min_words, min(max_words, len(head)))])


def openings(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct sentiment-neutral sentence openings (2–8 words), in order of discovery.

    They are cut from positive and negative sentences only, before the first polar word, so the
    same opening also begins sentences of the other polarity: the continuation decides.
    """
    rng = random.Random(seed)
    seen: dict[str, None] = {}
    while len(seen) < n:
        text, _ = sentence(rng, rng.choice(("pos", "neg")))
        opening = neutral_opening(text, rng)
        if opening is not None:
            seen.setdefault(opening, None)
    return list(seen)
