"""Synthetic clinical notes with planted identifiers, for measuring de-identification.

Written from the HIPAA Safe Harbor list (45 CFR 164.514(b)(2)) and from how notes are written, not from
any de-identifier's rules: names come from many origins and none from ``client_agent.deid_rules``' list
of given names, and they appear in the casings and orders notes use (title case, ALL CAPS, "Last, First",
lower case after a title). Every planted identifier is recorded with its span and its type; the text
around it is clinical filler that holds no PHI (doses, vitals, eponymous diseases, ages under 90, years on
their own), so that a detected span overlapping no planted identifier is a false positive.

``generate_notes(n, seed=...)`` is deterministic for a seed.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum

from client_agent.phi import PHIFinder, Span


class SafeHarbor(StrEnum):
    """The Safe Harbor identifier types a note can hold; finer than the rule's 18 items where a
    de-identifier's weak spots differ (a city alone against a street address)."""

    NAME = "NAME"
    STREET = "STREET_ADDRESS"
    CITY = "CITY"
    ZIP = "ZIP"
    PO_BOX = "PO_BOX"
    FACILITY = "FACILITY"
    DATE = "DATE"
    AGE = "AGE_OVER_89"
    PHONE = "PHONE"
    FAX = "FAX"
    EMAIL = "EMAIL"
    SSN = "SSN"
    MRN = "MRN"
    ACCOUNT = "ACCOUNT"
    URL = "URL"
    IP = "IP_ADDRESS"


@dataclass(frozen=True)
class Planted:
    start: int
    end: int
    kind: SafeHarbor
    value: str


@dataclass
class Note:
    style: str
    text: str = ""
    planted: list[Planted] = field(default_factory=list)

    def say(self, text: str) -> None:
        self.text += text

    def put(self, kind: SafeHarbor, value: str) -> None:
        self.planted.append(Planted(len(self.text), len(self.text) + len(value), kind, value))
        self.text += value

    def write(self, *parts: str | tuple[SafeHarbor, str]) -> None:
        """Text and planted identifiers in order: a string is said, a (type, value) pair is planted."""
        for part in parts:
            if isinstance(part, str):
                self.say(part)
            else:
                self.put(*part)


# --- vocabulary: many origins ------------------------------------------------------------------------------
GIVEN = [
    "Nkechi",
    "Chukwuemeka",
    "Oluwaseun",
    "Adaeze",
    "Kwame",
    "Abena",
    "Kofi",
    "Yaw",
    "Thandiwe",
    "Sipho",
    "Zanele",
    "Tendai",
    "Wanjiru",
    "Kipchoge",
    "Amara",
    "Folasade",
    "Babajide",
    "Chiamaka",
    "Obinna",
    "Ngozi",
    "Xiaoling",
    "Wei",
    "Jun",
    "Huiying",
    "Zhiwei",
    "Yanmei",
    "Haoran",
    "Qiong",
    "Minh",
    "Thuy",
    "Huong",
    "Quang",
    "Duc",
    "Lan",
    "Anh",
    "Jae-won",
    "Seo-yeon",
    "Min-jun",
    "Ji-ho",
    "Hye-jin",
    "Dong-hyun",
    "Hiroshi",
    "Keiko",
    "Takumi",
    "Haruka",
    "Ryota",
    "Sakura",
    "Tomoko",
    "Arjun",
    "Lakshmi",
    "Venkatesh",
    "Deepika",
    "Sunita",
    "Harpreet",
    "Gurpreet",
    "Anjali",
    "Prakash",
    "Meenakshi",
    "Siddharth",
    "Kavitha",
    "Rajesh",
    "Farida",
    "Youssef",
    "Omar",
    "Layla",
    "Nadia",
    "Karim",
    "Samira",
    "Tariq",
    "Leila",
    "Rania",
    "Bilal",
    "Ayşe",
    "Mehmet",
    "Emre",
    "Zeynep",
    "Burak",
    "Elif",
    "Oksana",
    "Bogdan",
    "Wojciech",
    "Agnieszka",
    "Małgorzata",
    "Krzysztof",
    "Zofia",
    "Tomasz",
    "Siobhan",
    "Padraig",
    "Niamh",
    "Aoife",
    "Ciaran",
    "Eilidh",
    "Rhys",
    "Cerys",
    "Gwyneth",
    "Dafydd",
    "Guadalupe",
    "Ximena",
    "Alejandro",
    "Itzel",
    "Rodrigo",
    "Valentina",
    "Joaquín",
    "Mateus",
    "Thiago",
    "Graça",
    "Ifeoma",
    "Tsehay",
    "Abebe",
    "Meseret",
    "Yohannes",
    "Fiifi",
    "Eero",
    "Aino",
    "Juha",
    "Sigrid",
    "Bjørn",
    "Astrid",
    "Katarzyna",
    "Giorgos",
    "Eleni",
    "Dimitra",
    "Vasilis",
    "Nikolaos",
    "Sione",
    "Malia",
    "Tevita",
    "Leilani",
    "Kalani",
    "Ahanu",
    "Winona",
    "Talulah",
    "Chayton",
    "Esi",
    "Rosalind",
    "Cornelius",
    "Eudora",
    "Thaddeus",
    "Wilhelmina",
    "Bartholomew",
    "Octavia",
    "Percival",
    "Marisol",
    "Dolores",
    "Anselm",
    "Hortense",
]
FAMILY = [
    "",
    "Okonkwo Adeyemi Eze Mensah Asante Boateng Nkosi Dlamini Moyo Kamau Otieno Mwangi Okafor Nwosu Balogun",
    "Zhang Liu Huang Zhou Xu Sun Guo Nguyen Tran Pham Le Vo Hoang Park Kim Choi Jung Kang Yoon Tanaka Watanabe",
    "Yamamoto Nakamura Kobayashi Suzuki Patel Sharma Iyer Reddy Gupta Menon Chatterjee Venkataraman Singh Gill",
    "Haddad Khoury Mansour Nasser Aziz Farouk Hassanein Yılmaz Demir Kaya Öztürk Kowalczyk Wiśniewski Zieliński",
    "Nowak Lewandowska O'Sullivan McGillicuddy Ní Bhriain Fitzgerald MacLeod Llewellyn Pritchard Hernández",
    "Gutiérrez Ramírez Castillo Villanueva Quispe Mamani Oliveira Gonçalves Tesfaye Haile Gebremedhin Mekonnen",
    "Virtanen Korhonen Lindqvist Johansson Andersen Papadopoulos Georgiou Konstantinidis Tuilagi Fifita Kahananui",
    "Begay Yazzie Tsosie Whitehorse Abernathy Featherstonehaugh Blackwood Thistlethwaite Van der Merwe De la Cruz",
    "Rasmussen Oyelaran Okoro Achterberg Vukovic Petrović Horvat Novak Dragomir Popescu Ionescu Szabó Nagy",
    "",
]
FAMILY_NAMES = [w for line in FAMILY for w in line.split() if w]
# Two-word surnames kept whole
FAMILY_NAMES += ["Ní Bhriain", "Van der Merwe", "De la Cruz", "bin Rashid", "Abu-Lughod", "Al-Masri"]
FAMILY_NAMES = [
    w for w in FAMILY_NAMES if w not in {"Ní", "Bhriain", "Van", "der", "Merwe", "De", "la", "Cruz"}
]

CITIES = [
    ("Lowell", "MA", "01852"),
    ("Worcester", "MA", "01608"),
    ("Springfield", "IL", "62704"),
    ("Ann Arbor", "MI", "48104"),
    ("Tucson", "AZ", "85719"),
    ("Boise", "ID", "83702"),
    ("Duluth", "MN", "55802"),
    ("Chattanooga", "TN", "37402"),
    ("Scranton", "PA", "18503"),
    ("Bakersfield", "CA", "93301"),
    ("Fargo", "ND", "58102"),
    ("Gallup", "NM", "87301"),
    ("Hilo", "HI", "96720"),
    ("Missoula", "MT", "59801"),
    ("Burlington", "VT", "05401"),
    ("Lubbock", "TX", "79401"),
    ("Savannah", "GA", "31401"),
    ("Yakima", "WA", "98901"),
    ("Paterson", "NJ", "07501"),
    ("Dearborn", "MI", "48126"),
    ("Flagstaff", "AZ", "86001"),
    ("Kalamazoo", "MI", "49007"),
    ("Bangor", "ME", "04401"),
    ("Shreveport", "LA", "71101"),
    ("Cheyenne", "WY", "82001"),
    ("Pawtucket", "RI", "02860"),
    ("Sioux Falls", "SD", "57104"),
    ("Poughkeepsie", "NY", "12601"),
    ("Terre Haute", "IN", "47807"),
    ("Eau Claire", "WI", "54701"),
    ("Brockton", "MA", "02301"),
    ("Chicopee", "MA", "01013"),
    ("Tuscaloosa", "AL", "35401"),
    ("Pueblo", "CO", "81003"),
    ("Wilmington", "DE", "19801"),
    ("Anchorage", "AK", "99501"),
]
STREET_WORDS = [
    "Wren",
    "Hollow",
    "Maple",
    "Cedar",
    "Juniper",
    "Lakeshore",
    "Pine",
    "Ridge",
    "Orchard",
    "Willow",
    "Harbor",
    "Magnolia",
    "Chestnut",
    "Elm",
    "Birch",
    "Quarry",
    "Mill",
    "Sycamore",
    "Briar",
    "Foxglove",
    "Heron",
    "Cobblestone",
    "Meadowlark",
    "Aspen",
    "Canyon",
    "Bluebonnet",
    "Kingfisher",
    "Tamarack",
    "Prospect",
    "Union",
    "Liberty",
    "Franklin",
    "Beacon",
    "Commonwealth",
    "Dorchester",
]
STREET_TYPES = [
    "Rd",
    "Road",
    "St",
    "Street",
    "Ave",
    "Avenue",
    "Lane",
    "Ln",
    "Drive",
    "Dr",
    "Blvd",
    "Court",
    "Way",
    "Terrace",
    "Place",
    "Circle",
    "Pkwy",
    "Trail",
]
FACILITIES = [
    "Beth Israel Deaconess Medical Center",
    "Beth Israel Deaconess",
    "St. Mary's Hospital",
    "St. Mary's",
    "Massachusetts General Hospital",
    "Mass General",
    "Cedars-Sinai Medical Center",
    "Mount Sinai Hospital",
    "Brigham and Women's Hospital",
    "Our Lady of Lourdes Hospital",
    "Johns Hopkins Hospital",
    "Good Samaritan Medical Center",
    "Lakeside Family Clinic",
    "Willow Creek Nursing Home",
    "Sunrise Rehabilitation Center",
    "Maple Grove Dialysis Unit",
    "St. Jude Children's Research Hospital",
    "Sacred Heart Hospice",
    "Riverside Community Health Center",
    "Northgate Urgent Care",
    "Saint Vincent's Infirmary",
    "Baystate Medical Center",
    "Mercy General",
    "Hope Valley Behavioral Health",
    "Pine Ridge Indian Health Service Hospital",
    "Kapiolani Medical Center",
    "Harborview Medical Center",
    "St. Luke's",
    "Tufts Medical Center",
    "Boston Children's",
]
AGE_WORDS = {
    90: "ninety",
    91: "ninety-one",
    92: "ninety-two",
    93: "ninety-three",
    94: "ninety-four",
    95: "ninety-five",
    96: "ninety-six",
    97: "ninety-seven",
    98: "ninety-eight",
    99: "ninety-nine",
    100: "one hundred",
    101: "one hundred and one",
    102: "one hundred two",
    104: "one hundred four",
}
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
DOMAINS = ["example.org", "mail.example.com", "patientmail.example.net", "clinic-example.org"]

# Filler that holds no PHI: clinical content a de-identifier must leave alone.
FILLER = [
    "BP 132/84, HR 88, RR 18, SpO2 97% on room air. ",
    "Started Lasix 40 mg PO daily and potassium chloride 20 mEq. ",
    "History of Parkinson's disease and Crohn's colitis, stable. ",
    "Hgb 10.2, WBC 11.4, creatinine 1.3; troponin negative x2. ",
    "CT abdomen showed no free air. Follow up in 2 weeks. ",
    "Glasgow Coma Scale 15. Babinski sign absent bilaterally. ",
    "Gram stain with gram-positive cocci in clusters; vancomycin 1 g IV q12h. ",
    "Prior EBV serology (Epstein-Barr) positive. Foley catheter removed. ",
    "Diagnosed with type 2 diabetes in 2009; A1c 7.9%. ",
    "Apgar scores 8 and 9 at 1 and 5 minutes. ",
    "Metoprolol tartrate 25 mg BID; hold for SBP < 100. ",
    "Denies chest pain, fever, or dysuria. Ambulating with a walker. ",
    "Hashimoto thyroiditis on levothyroxine 88 mcg. ",
    "MRI brain without contrast: chronic small vessel ischemic change. ",
    "Wound care per protocol; dressing changed, no erythema. ",
    "Her 45-year-old son helps with medications. ",
    "Smoked 1 pack per day for 30 years, quit in 2015. ",
    "Plan: continue heparin drip, recheck PTT in 6 hours. ",
    "Physical therapy recommends home with services. ",
    "Pain 4/10, improved with acetaminophen 650 mg q6h PRN. ",
]


class _Draw:
    """Random choices for one note set; `rng` is seeded by the caller (test data, not a secret)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def pick(self, seq):  # type: ignore[no-untyped-def]
        return self.rng.choice(seq)

    def given(self) -> str:
        return self.pick(GIVEN)

    def family(self) -> str:
        return self.pick(FAMILY_NAMES)

    def full_name(self, *, casing: str | None = None) -> str:
        style = casing or self.pick(["title", "title", "title", "title", "caps", "last_first", "initial"])
        given, family = self.given(), self.family()
        if style == "caps":
            return f"{given} {family}".upper()
        if style == "last_first":
            return f"{family}, {given}"
        if style == "initial":
            return f"{given[0]}. {family}"
        return f"{given} {family}"

    def date(self) -> str:
        y, m, d = self.rng.randint(1998, 2024), self.rng.randint(1, 12), self.rng.randint(1, 28)
        month = MONTHS[m - 1]
        return self.pick(
            [
                f"{m:02d}/{d:02d}/{y}",
                f"{m}/{d}/{y % 100:02d}",
                f"{y}-{m:02d}-{d:02d}",
                f"{month} {d}, {y}",
                f"{d} {month[:3]} {y}",
                f"{month[:3]}. {d}",
                f"{m}-{d}-{y}",
                f"{month} {d}",
                f"{d:02d}.{m:02d}.{y}",
            ]
        )

    def phone(self) -> str:
        a, b, c = self.rng.randint(201, 989), self.rng.randint(200, 999), self.rng.randint(0, 9999)
        return self.pick(
            [
                f"({a}) {b}-{c:04d}",
                f"{a}-{b}-{c:04d}",
                f"{a}.{b}.{c:04d}",
                f"+1 {a} {b} {c:04d}",
                f"1-{a}-{b}-{c:04d}",
                f"{a} {b} {c:04d}",
            ]
        )

    def ssn(self) -> str:
        a, b, c = self.rng.randint(100, 665), self.rng.randint(10, 99), self.rng.randint(1000, 9999)
        return self.pick([f"{a}-{b}-{c}", f"{a} {b} {c}", f"{a}{b}{c}", f"{a}.{b}.{c}"])

    def mrn(self) -> str:
        return self.pick(
            [
                f"{self.rng.randint(0, 99999999):08d}",
                f"{self.rng.randint(1000, 9999)}-{self.rng.randint(100, 999)}",
                f"A{self.rng.randint(1000000, 9999999)}",
                f"MR{self.rng.randint(100000, 999999)}",
            ]
        )

    def account(self) -> str:
        return self.pick(
            [
                f"{self.rng.randint(10, 99)}-{self.rng.randint(1000, 9999)}-{self.rng.randint(1, 9)}",
                f"{self.rng.randint(1000000000, 9999999999)}",
                f"AC-{self.rng.randint(100000, 999999)}",
            ]
        )

    def street(self) -> str:
        number = self.rng.randint(3, 9899)
        words = " ".join(self.rng.sample(STREET_WORDS, self.rng.choice([1, 1, 2])))
        unit = self.pick(["", "", "", f", Apt {self.rng.randint(1, 40)}", f" Unit {self.rng.randint(1, 9)}B"])
        return f"{number} {words} {self.pick(STREET_TYPES)}{unit}"

    def po_box(self) -> str:
        n = self.rng.randint(10, 9999)
        return self.pick([f"PO Box {n}", f"P.O. Box {n}", f"Post Office Box {n}", f"P O Box {n}"])

    def email(self, given: str, family: str) -> str:
        user = self.pick([f"{given[0]}.{family}", f"{given}{self.rng.randint(1, 99)}", f"{family}.{given}"])
        user = "".join(c for c in user.lower() if c.isascii() and (c.isalnum() or c in "._"))
        return f"{user or 'pt'}@{self.pick(DOMAINS)}"

    def url(self) -> str:
        return self.pick(
            [
                f"https://portal.example.org/patients/{self.rng.randint(1000, 99999)}",
                f"http://mychart.example.com/p/{self.rng.randint(100, 9999)}",
                f"www.example-health.org/records/{self.rng.randint(10000, 99999)}",
            ]
        )

    def ip(self) -> str:
        if self.rng.random() < 0.15:
            return f"2001:db8:{self.rng.randint(1, 0xFFFF):x}::{self.rng.randint(1, 0xFFF):x}"
        return ".".join(str(self.rng.randint(1, 254)) for _ in range(4))

    def age(self) -> tuple[int, str]:
        years = self.pick(list(AGE_WORDS))
        return years, (AGE_WORDS[years] if self.rng.random() < 0.3 else str(years))

    def filler(self, k: int = 2) -> str:
        return "".join(self.rng.sample(FILLER, k))


K = SafeHarbor


# --- note styles -----------------------------------------------------------------------------------------
def _discharge(d: _Draw) -> Note:
    n = Note("discharge summary")
    n.write(
        "DISCHARGE SUMMARY\nPatient Name: ",
        (K.NAME, d.full_name()),
        "\nMRN: ",
        (K.MRN, d.mrn()),
        "   Account #: ",
        (K.ACCOUNT, d.account()),
        "\nAdmission Date: ",
        (K.DATE, d.date()),
        "   Discharge Date: ",
        (K.DATE, d.date()),
        "\nAttending: ",
        (K.NAME, d.full_name(casing="title")),
        ", MD\nHospital course: admitted to ",
        (K.FACILITY, d.pick(FACILITIES)),
        " with community-acquired pneumonia. " + d.filler(),
        "Discharged to ",
        (K.FACILITY, d.pick(FACILITIES)),
        " for rehabilitation. Follow-up with ",
        d.pick(["Dr. ", "Dr "]),
        (K.NAME, d.family()),
        " on ",
        (K.DATE, d.date()),
        ".\n",
    )
    return n


def _triage(d: _Draw) -> Note:
    n = Note("ED triage")
    _years, age = d.age()
    n.write(
        "ED TRIAGE ",
        (K.DATE, d.date()),
        " 14:32\n",
        (K.NAME, d.full_name(casing="caps")),
        " is a ",
        (K.AGE, age),
        d.pick(["-year-old", " year old", " yo", " y/o"]) + " " + d.pick(["woman", "man", "patient"]),
        " brought by ambulance from home in ",
    )
    city, _, _ = d.pick(CITIES)
    n.write(
        (K.CITY, city),
        " after a fall. " + d.filler(),
        "Contact: son ",
        (K.NAME, d.given()),
        " at ",
        (K.PHONE, d.phone()),
        ".\n",
    )
    return n


def _progress(d: _Draw) -> Note:
    n = Note("progress note (SOAP)")
    given, family = d.given(), d.family()
    n.write(
        "Progress Note - ",
        (K.DATE, d.date()),
        "\nS: ",
        d.pick(["Mr. ", "Mrs. ", "Ms. "]),
        (K.NAME, family),
        " reports less dyspnea overnight. Her daughter ",
        (K.NAME, f"{d.given()} {d.family()}"),
        " was at the bedside. ",
        "O: " + d.filler(3),
        "A/P: improving. Discussed with ",
        d.pick(["dr. ", "Dr. ", "DR. "]),
        (K.NAME, d.family().lower()),
        " from cardiology.\nSigned: ",
        (K.NAME, f"{given} {family}"),
        ", RN\n",
    )
    return n


def _referral(d: _Draw) -> Note:
    n = Note("referral letter")
    city, state, zip_code = d.pick(CITIES)
    n.write(
        (K.FACILITY, d.pick(FACILITIES)),
        "\n",
        (K.STREET, d.street()),
        "\n",
        (K.CITY, city),
        ", " + state + " ",
        (K.ZIP, zip_code),
        "\n\n",
        (K.DATE, d.date()),
        "\n\nDear Dr. ",
        (K.NAME, d.family()),
        ",\n\nThank you for seeing ",
        (K.NAME, d.full_name(casing="title")),
        " (DOB ",
        (K.DATE, d.date()),
        "), a ",
    )
    _years, age = d.age()
    n.write(
        (K.AGE, age),
        " year old retired teacher with atrial fibrillation. " + d.filler(),
        "Please call my office at ",
        (K.PHONE, d.phone()),
        " or fax results to ",
        (K.FAX, d.phone()),
        ".\n\nSincerely,\n",
        (K.NAME, d.full_name(casing="title")),
        ", MD\n",
    )
    return n


def _phone_call(d: _Draw) -> Note:
    n = Note("telephone encounter")
    given, family = d.given(), d.family()
    n.write(
        "Telephone encounter ",
        (K.DATE, d.date()),
        ". Spoke with ",
        (K.NAME, f"{given} {family}"),
        ", the patient's caregiver, at ",
        (K.PHONE, d.phone()),
        ". She asked that results be e-mailed to ",
        (K.EMAIL, d.email(given, family)),
        ". " + d.filler(1),
        "Pharmacy in ",
    )
    city, _, _ = d.pick(CITIES)
    n.write(
        (K.CITY, city),
        " notified.\n",
    )
    return n


def _registration(d: _Draw) -> Note:
    n = Note("registration form")
    given, family = d.given(), d.family()
    city, state, zip_code = d.pick(CITIES)
    n.write(
        "PATIENT REGISTRATION\nName: ",
        (K.NAME, f"{family.upper()}, {given.upper()}"),
        "\nSSN: ",
        (K.SSN, d.ssn()),
        "\nMailing address: ",
        (K.PO_BOX, d.po_box()),
        ", ",
        (K.CITY, city),
        ", " + state + " ",
        (K.ZIP, zip_code),
        "\nHome: ",
        (K.STREET, d.street()),
        "\nPhone: ",
        (K.PHONE, d.phone()),
        "   Fax: ",
        (K.FAX, d.phone()),
        "\nEmail: ",
        (K.EMAIL, d.email(given, family)),
        "\nMedical record number: ",
        (K.MRN, d.mrn()),
        "\nBilling account: ",
        (K.ACCOUNT, d.account()),
        "\n",
    )
    return n


def _portal(d: _Draw) -> Note:
    n = Note("patient portal message")
    given, family = d.given(), d.family()
    n.write(
        "Portal message received ",
        (K.DATE, d.date()),
        " from IP ",
        (K.IP, d.ip()),
        " via ",
        (K.URL, d.url()),
        '.\n"Hi, this is ',
        (K.NAME, given.lower() if d.rng.random() < 0.3 else given),
        " ",
        (K.NAME, family),
        ". My mother is ",
    )
    _years, age = d.age()
    n.write(
        (K.AGE, age),
        " now and still lives alone in ",
    )
    city, _, _ = d.pick(CITIES)
    n.write(
        (K.CITY, city),
        ". Can she get a flu shot? My cell is ",
        (K.PHONE, d.phone()),
        '."\n' + d.filler(1) + "\n",
    )
    return n


def _social_work(d: _Draw) -> Note:
    n = Note("social work note")
    n.write(
        "Social work: met with patient and niece ",
        (K.NAME, d.full_name(casing="title")),
        ". Patient, aged ",
    )
    years, _age = d.age()
    n.write(
        (K.AGE, str(years)),
        ", moved from ",
    )
    city, _, _ = d.pick(CITIES)
    n.write(
        (K.CITY, city),
        " to ",
        (K.FACILITY, d.pick(FACILITIES)),
        " on ",
        (K.DATE, d.date()),
        ". Medicaid application pending; SSN ",
        (K.SSN, d.ssn()),
        " verified. Lives at ",
        (K.STREET, d.street()),
        ". " + d.filler(1) + "\n",
    )
    return n


def _radiology(d: _Draw) -> Note:
    n = Note("radiology report")
    n.write(
        "EXAM: CT chest with contrast\nPATIENT: ",
        (K.NAME, d.full_name(casing="caps")),
        "  MR#: ",
        (K.MRN, d.mrn()),
        "  DOS: ",
        (K.DATE, d.date()),
        "\nCOMPARISON: ",
        (K.DATE, d.date()),
        " at ",
        (K.FACILITY, d.pick(FACILITIES)),
        ".\nFINDINGS: No pulmonary embolism. " + d.filler(1),
        "\nImages: ",
        (K.URL, d.url()),
        " (PACS node ",
        (K.IP, d.ip()),
        ")\nDictated by: ",
        (K.NAME, d.full_name()),
        "\n",
    )
    return n


def _consult(d: _Draw) -> Note:
    n = Note("consult note")
    _years, age = d.age()
    n.write(
        "Geriatrics consult requested by ",
        d.pick(["Dr. ", "Prof. ", "Nurse "]),
        (K.NAME, d.full_name(casing="title")),
        " for a ",
        (K.AGE, age),
        "-year-old with delirium. ",
        "The patient, ",
        (K.NAME, d.full_name(casing="title")),
        ", was transferred from ",
        (K.FACILITY, d.pick(FACILITIES)),
        " yesterday. " + d.filler(2),
        "Old records faxed from ",
        (K.FAX, d.phone()),
        ". Account ",
        (K.ACCOUNT, d.account()),
        " flagged for review.\n",
    )
    return n


def _nursing(d: _Draw) -> Note:
    n = Note("nursing note")
    given = d.given()
    n.write(
        "0700 ",
        (K.DATE, d.date()),
        ": ",
        (K.NAME, given),
        " slept well. Husband ",
        (K.NAME, f"{d.given()} {d.family()}"),
        " called from ",
        (K.CITY, d.pick(CITIES)[0]),
        " and asked that mail go to ",
        (K.PO_BOX, d.po_box()),
        ". " + d.filler(2),
        "Handed over to ",
        (K.NAME, d.full_name()),
        ", RN.\n",
    )
    return n


def _billing(d: _Draw) -> Note:
    n = Note("billing note")
    n.write(
        "Claim for ",
        (K.NAME, d.full_name(casing="last_first")),
        ", acct no. ",
        (K.ACCOUNT, d.account()),
        ", SSN ",
        (K.SSN, d.ssn()),
        ", MRN ",
        (K.MRN, d.mrn()),
        ", service date ",
        (K.DATE, d.date()),
        " at ",
        (K.FACILITY, d.pick(FACILITIES)),
        ". Guarantor address ",
        (K.STREET, d.street()),
        ", ",
    )
    city, state, zip_code = d.pick(CITIES)
    n.write(
        (K.CITY, city),
        " " + state + " ",
        (K.ZIP, zip_code),
        ". Questions: ",
        (K.EMAIL, d.email(d.given(), d.family())),
        "\n",
    )
    return n


STYLES = [
    _discharge,
    _triage,
    _progress,
    _referral,
    _phone_call,
    _registration,
    _portal,
    _social_work,
    _radiology,
    _consult,
    _nursing,
    _billing,
]


def generate_notes(n: int, *, seed: int) -> list[Note]:
    """``n`` notes cycling through every style, each with its planted identifiers."""
    draw = _Draw(random.Random(seed))
    return [STYLES[i % len(STYLES)](draw) for i in range(n)]


# --- scoring -----------------------------------------------------------------------------------------
@dataclass
class Score:
    """Per Safe Harbor type: identifiers planted and removed; per placeholder type: spans and hits."""

    planted: Counter[str] = field(default_factory=Counter)
    removed: Counter[str] = field(default_factory=Counter)
    spans: Counter[str] = field(default_factory=Counter)
    true_spans: Counter[str] = field(default_factory=Counter)
    misses: list[tuple[str, str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def recall(self, kind: str) -> float:
        return self.removed[kind] / self.planted[kind] if self.planted[kind] else float("nan")

    def precision(self, label: str | None = None) -> float:
        spans = self.spans[label] if label else sum(self.spans.values())
        hits = self.true_spans[label] if label else sum(self.true_spans.values())
        return hits / spans if spans else float("nan")

    def overall_recall(self) -> float:
        return sum(self.removed.values()) / sum(self.planted.values())


def score_note(note: Note, found: list[Span], score: Score) -> None:
    """An identifier is removed when every letter and digit of it lies in a found span (an SSN that keeps
    six digits is a miss); a found span overlapping no planted identifier is a false positive."""
    covered = set()
    for span in found:
        covered.update(range(span.start, span.end))
        score.spans[span.kind.value] += 1
        if any(span.start < p.end and span.end > p.start for p in note.planted):
            score.true_spans[span.kind.value] += 1
    for p in note.planted:
        score.planted[p.kind] += 1
        if all(i in covered for i in range(p.start, p.end) if note.text[i].isalnum()):
            score.removed[p.kind] += 1
        else:
            context = note.text[max(0, p.start - 30) : p.end + 10].replace("\n", " ")
            score.misses.append((p.kind, p.value, context))


def evaluate(finder: PHIFinder, notes: list[Note]) -> Score:
    """``finder``'s recall per Safe Harbor type and precision per placeholder type on ``notes``."""
    score = Score()
    started = time.perf_counter()
    for note in notes:
        score_note(note, finder.find(note.text), score)
    score.seconds = time.perf_counter() - started
    return score
