"""Pools and identifier formats for the sixth synthetic note set (`tests/deid_notes_sixth.py`).

Every value here is invented: the people, facilities, streets and numbers were written for this set,
and any resemblance to a real person or record is chance. The identifier formats follow how such
values are written in US hospital records (see the generator's docstring for how this was written).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# origin -> (given names, surnames); a given name or surname may carry diacritics, hyphens, particles.
ORIGINS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "anglo": (
        (
            "Margaret",
            "Harold",
            "Dorothy",
            "Wesley",
            "Brittany",
            "Cody",
            "Eleanor",
            "Dale",
            "Kayleigh",
            "Russell",
        ),
        ("Whitaker", "Pemberton", "Holloway", "Caldwell", "Ashby", "Lindqvist-Moore", "Tidwell", "Barnhart"),
    ),
    "hispanic": (
        ("José", "María Elena", "Guadalupe", "Joaquín", "Ximena", "Rigoberto", "Itzel", "Ramón", "Yesenia"),
        ("Núñez", "Villarreal", "Gómez-Ibarra", "de la Cruz", "Saldaña", "Ochoa", "Peña", "Zúñiga"),
    ),
    "chinese": (
        ("Wei", "Xiaoling", "Jianhua", "Mei-Ling", "Zhiwei", "Yuting", "Hao", "Lanfen"),
        ("Zhang", "Liu", "Huang", "Xu", "Guo", "Zhou", "Tsang", "Cheung"),
    ),
    "vietnamese": (
        ("Thị Bích", "Văn Hùng", "Minh", "Thanh Hương", "Quốc", "Ngọc Anh", "Duy", "Phượng"),
        ("Nguyễn", "Trần", "Phạm", "Huỳnh", "Võ", "Đặng", "Bùi", "Lâm"),
    ),
    "korean": (
        ("Ji-hoon", "Seo-yeon", "Min-jun", "Eun-ji", "Dong-hyun", "Hye-jin", "Sung-min"),
        ("Park", "Choi", "Jung", "Kang", "Yoon", "Shin", "Hwang"),
    ),
    "south_asian": (
        (
            "Priyanka",
            "Venkatesh",
            "Harpreet",
            "Anjali",
            "Siddharth",
            "Lakshmi",
            "Farhan",
            "Devika",
            "Rajinder",
        ),
        ("Raghunathan", "Bhattacharya", "Sandhu", "Iyer", "Chaudhry", "Venkataraman", "Deshpande", "Gill"),
    ),
    "arabic": (
        ("Mohammed", "Fatima", "Youssef", "Layla", "Khalid", "Noor", "Abdulrahman", "Rania"),
        ("Al-Hashimi", "Haddad", "El-Sayed", "Nasser", "Abu-Ghazaleh", "Mansour", "bin Saleh", "Khoury"),
    ),
    "west_african": (
        ("Chukwuemeka", "Ngozi", "Oluwaseun", "Adaeze", "Kwame", "Abena", "Babatunde", "Folasade"),
        ("Okonkwo", "Adeyemi", "Mensah", "Okafor-Eze", "Boateng", "Oyelaran", "Nwachukwu", "Asante"),
    ),
    "slavic": (
        ("Łukasz", "Agnieszka", "Dmitri", "Svetlana", "Bohdan", "Zofia", "Oleksandr", "Jiří", "Katarzyna"),
        ("Wiśniewski", "Kowalczyk", "Dvořák", "Petrenko", "Sokolova", "Brzęczyszczykiewicz", "Horváth"),
    ),
    "irish": (
        ("Siobhán", "Padraig", "Aoife", "Ciarán", "Niamh", "Declan", "Róisín"),
        ("O'Sullivan", "McGillicuddy", "Ó Briain", "Fitzgerald", "O'Rourke", "MacNamara", "Donnelly"),
    ),
    "germanic": (
        ("Jürgen", "Anneliese", "Hendrik", "Griet", "Søren", "Ingrid", "Wolfgang", "Maarten"),
        ("Müller", "van der Berg", "von Hoffmann", "Schröder", "Van Buren", "Janssen", "Vandenberghe"),
    ),
    "french": (
        ("François", "Renée", "Amélie", "Thibault", "Zoë", "Hélène", "Jean-Luc", "Marie-Claude"),
        ("Lefèvre", "Thibodeaux", "Le Blanc", "Boudreaux", "Desjardins", "St. Pierre", "Delacroix"),
    ),
    "italian": (
        ("Giuseppe", "Francesca", "Salvatore", "Annunziata", "Vincenzo", "Rosaria", "Carmine"),
        ("DiMaggio", "Esposito", "Lo Bianco", "Santangelo", "D'Alessandro", "Bevilacqua", "Russo"),
    ),
    "japanese": (
        ("Haruto", "Yuki", "Kenji", "Akiko", "Sachiko", "Takeshi", "Emiko"),
        ("Takahashi", "Watanabe", "Yamaguchi", "Nakamura", "Kobayashi", "Inoue", "Matsumoto"),
    ),
    "filipino": (
        ("Maricel", "Rodel", "Jhun", "Lorna", "Bong", "Analyn", "Ferdinand"),
        ("Dela Rosa", "Macaraeg", "Bautista", "Pangilinan", "Villanueva", "Dimaculangan", "Sison"),
    ),
    "east_african": (
        ("Abdirahman", "Hodan", "Tesfaye", "Mekdes", "Fartun", "Yohannes", "Hamdi"),
        ("Warsame", "Abdullahi", "Gebremedhin", "Tadesse", "Hassan Nur", "Osman", "Haile"),
    ),
    "haitian": (
        ("Jean-Baptiste", "Nadège", "Wilner", "Mirlande", "Fritznel", "Guerline"),
        ("Pierre-Louis", "Désir", "Jean-Charles", "Dorsainvil", "Théodore", "Augustin"),
    ),
    "turkish": (
        ("Mehmet", "Ayşe", "Emre", "Gülşen", "Oğuz", "Zeynep"),
        ("Yılmaz", "Çelik", "Öztürk", "Şahin", "Aydın", "Kılıç"),
    ),
}

NICKNAMES = (
    "Bobby",
    "Peggy",
    "Junior",
    "Dot",
    "Buddy",
    "Lupe",
    "Mo",
    "Cici",
    "Tiny",
    "Skip",
    "Nana",
    "Sunny",
)

MIDDLE_INITIALS = "ABCDEFGHJKLMNPRSTW"


@dataclass(frozen=True)
class Person:
    given: str
    surname: str
    middle: str  # one capital letter, or ""
    origin: str


def person(rng: random.Random, origin: str | None = None) -> Person:
    origin = origin or rng.choice(sorted(ORIGINS))
    givens, surnames = ORIGINS[origin]
    middle = rng.choice(MIDDLE_INITIALS) if rng.random() < 0.35 else ""
    return Person(rng.choice(givens), rng.choice(surnames), middle, origin)


def full_name(rng: random.Random, p: Person) -> str:
    """The ways a whole name is written in a chart or a letter."""
    style = rng.randrange(7)
    mid = f" {p.middle}." if p.middle else ""
    if style == 0:
        return f"{p.given}{mid} {p.surname}"
    if style == 1:
        return f"{p.surname}, {p.given}{mid}"
    if style == 2:
        return f"{p.surname.upper()}, {p.given.upper()}{(' ' + p.middle) if p.middle else ''}"
    if style == 3:
        return f"{p.given[0]}. {p.surname}"
    if style == 4 and p.origin in {"vietnamese", "chinese", "korean"}:
        return f"{p.surname} {p.given}"  # family name first, as the patient writes it
    if style == 5:
        return f"{p.given.upper()} {p.surname.upper()}"
    if rng.random() < 0.3:
        return f'{p.given} "{rng.choice(NICKNAMES)}" {p.surname}'
    return f"{p.given} {p.surname}"


def typed_name(rng: random.Random, p: Person) -> str:
    """How a patient or relative types a name in a portal message."""
    return rng.choice(
        (p.given.lower(), f"{p.given.lower()} {p.surname.lower()}", p.given, f"{p.given} {p.surname[0]}")
    )


def short_name(rng: random.Random, p: Person) -> str:
    """The surname alone, for 'Mr. X' / 'Dr. X' after the first mention."""
    return p.surname if rng.random() < 0.85 else p.surname.upper()


CREDENTIALS = ("MD", "DO", "RN", "NP", "PA-C", "PharmD", "LCSW", "MSW", "RT", "CNA", "LPN", "PT, DPT", "RD")

FACILITIES = (
    "St. Benedict's Regional Medical Center", "Mercy Hollow Hospital", "Lakeshore General", "Cedar Ridge Clinic",
    "Prairie View Community Hospital", "Good Shepherd Medical Center", "Riverbend Health", "Ozark Valley Hospital",
    "Saint Columba Hospital", "Harborview Pines Rehabilitation", "Mount Tabor Family Practice",
    "Sunnybrook Skilled Nursing Facility", "Bayou Teche Medical Center", "Northfield Memorial", "Willamette Heights Hospital",
    "Three Rivers Urgent Care", "Kessler-Abernathy Cancer Institute", "Our Lady of Lourdes Hospital",
    "Copper Canyon Behavioral Health", "Elmhurst Pediatrics", "Greater Piedmont Dialysis", "Sacred Heart Hospice House",
    "Blue Mesa Imaging", "Fairhaven Surgical Associates", "Pinecrest VA Clinic", "Tri-County Home Health",
)  # fmt: skip
FACILITY_ABBREVIATIONS = ("SBRMC", "LGH", "PVCH", "GSMC", "OVH", "SCH", "NMH", "WHH")

STREETS = (
    "Maple", "Old Mill", "Kilbourn", "Magnolia", "Wabash", "Cottonwood", "Dr. Martin Luther King Jr.", "Calle Sol",
    "Pheasant Run", "Lincoln", "Sycamore Hollow", "Bayshore", "Quail Ridge", "Division", "Sixteenth", "Beulah",
)  # fmt: skip
STREET_TYPES = (
    "St",
    "Ave",
    "Rd",
    "Blvd",
    "Dr",
    "Ln",
    "Ct",
    "Way",
    "Street",
    "Avenue",
    "Road",
    "Terrace",
    "Pkwy",
)
DIRECTIONS = ("N", "S", "E", "W", "NE", "SW", "North", "N.", "S.")

CITIES = (
    ("Eau Claire", "WI"), ("Coeur d'Alene", "ID"), ("Winston-Salem", "NC"), ("St. Cloud", "MN"), ("Española", "NM"),
    ("Opelousas", "LA"), ("Kalamazoo", "MI"), ("Bowling Green", "KY"), ("Yakima", "WA"), ("Hattiesburg", "MS"),
    ("Lawrence", "KS"), ("Chula Vista", "CA"), ("Dubuque", "IA"), ("Scranton", "PA"), ("Lake Havasu City", "AZ"),
    ("Bismarck", "ND"), ("Fall River", "MA"), ("Poughkeepsie", "NY"), ("Bend", "OR"), ("Brownsville", "TX"),
    ("Mount Pleasant", "SC"), ("Kearney", "NE"), ("Cheyenne", "WY"), ("Muncie", "IN"), ("New Iberia", "LA"),
)  # fmt: skip

DEVICE_KINDS = (
    "dual-chamber pacemaker", "ICD", "insulin pump", "CPAP machine", "LVAD controller", "cochlear implant processor",
    "CGM transmitter", "spinal cord stimulator", "implantable loop recorder", "home oxygen concentrator",
)  # fmt: skip
DEVICE_MAKERS = (
    "Medtronic",
    "Abbott",
    "Boston Scientific",
    "Biotronik",
    "ResMed",
    "Tandem",
    "Dexcom",
    "Philips",
)

VEHICLES = (
    "2014 Honda Civic",
    "silver Ford F-150",
    "2019 Toyota RAV4",
    "black Chevy Tahoe",
    "white Nissan Altima",
)

PORTAL_DOMAINS = (
    "mychart.sbrmc.org",
    "portal.lakeshoregeneral.com",
    "patients.riverbendhealth.net",
    "myhealth.gsmc.org",
)
EMAIL_DOMAINS = (
    "gmail.com",
    "yahoo.com",
    "hotmail.com",
    "aol.com",
    "outlook.com",
    "icloud.com",
    "comcast.net",
)
CLINIC_DOMAINS = ("sbrmc.org", "lakeshoregeneral.com", "riverbendhealth.net", "gsmc.org", "ovh-health.org")

MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip
WEEKDAYS = ("Mon", "Tues", "Wednesday", "Thursday", "Fri", "Saturday", "Sunday")

NUMBER_WORDS = {
    90: "ninety", 91: "ninety-one", 92: "ninety-two", 93: "ninety-three", 94: "ninety-four", 95: "ninety-five",
    96: "ninety-six", 97: "ninety-seven", 98: "ninety-eight", 99: "ninety-nine", 100: "one hundred",
    101: "one hundred and one", 102: "one hundred two",
}  # fmt: skip
