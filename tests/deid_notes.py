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
    n.say("DISCHARGE SUMMARY\nPatient Name: ")
    n.put(K.NAME, d.full_name())
    n.say("\nMRN: ")
    n.put(K.MRN, d.mrn())
    n.say("   Account #: ")
    n.put(K.ACCOUNT, d.account())
    n.say("\nAdmission Date: ")
    n.put(K.DATE, d.date())
    n.say("   Discharge Date: ")
    n.put(K.DATE, d.date())
    n.say("\nAttending: ")
    n.put(K.NAME, d.full_name(casing="title"))
    n.say(", MD\nHospital course: admitted to ")
    n.put(K.FACILITY, d.pick(FACILITIES))
    n.say(" with community-acquired pneumonia. " + d.filler())
    n.say("Discharged to ")
    n.put(K.FACILITY, d.pick(FACILITIES))
    n.say(" for rehabilitation. Follow-up with ")
    n.say(d.pick(["Dr. ", "Dr "]))
    n.put(K.NAME, d.family())
    n.say(" on ")
    n.put(K.DATE, d.date())
    n.say(".\n")
    return n


def _triage(d: _Draw) -> Note:
    n = Note("ED triage")
    _years, age = d.age()
    n.say("ED TRIAGE ")
    n.put(K.DATE, d.date())
    n.say(" 14:32\n")
    n.put(K.NAME, d.full_name(casing="caps"))
    n.say(" is a ")
    n.put(K.AGE, age)
    n.say(d.pick(["-year-old", " year old", " yo", " y/o"]) + " " + d.pick(["woman", "man", "patient"]))
    n.say(" brought by ambulance from home in ")
    city, _, _ = d.pick(CITIES)
    n.put(K.CITY, city)
    n.say(" after a fall. " + d.filler())
    n.say("Contact: son ")
    n.put(K.NAME, d.given())
    n.say(" at ")
    n.put(K.PHONE, d.phone())
    n.say(".\n")
    return n


def _progress(d: _Draw) -> Note:
    n = Note("progress note (SOAP)")
    given, family = d.given(), d.family()
    n.say("Progress Note - ")
    n.put(K.DATE, d.date())
    n.say("\nS: ")
    n.say(d.pick(["Mr. ", "Mrs. ", "Ms. "]))
    n.put(K.NAME, family)
    n.say(" reports less dyspnea overnight. Her daughter ")
    n.put(K.NAME, f"{d.given()} {d.family()}")
    n.say(" was at the bedside. ")
    n.say("O: " + d.filler(3))
    n.say("A/P: improving. Discussed with ")
    n.say(d.pick(["dr. ", "Dr. ", "DR. "]))
    n.put(K.NAME, d.family().lower())
    n.say(" from cardiology.\nSigned: ")
    n.put(K.NAME, f"{given} {family}")
    n.say(", RN\n")
    return n


def _referral(d: _Draw) -> Note:
    n = Note("referral letter")
    city, state, zip_code = d.pick(CITIES)
    n.put(K.FACILITY, d.pick(FACILITIES))
    n.say("\n")
    n.put(K.STREET, d.street())
    n.say("\n")
    n.put(K.CITY, city)
    n.say(", " + state + " ")
    n.put(K.ZIP, zip_code)
    n.say("\n\n")
    n.put(K.DATE, d.date())
    n.say("\n\nDear Dr. ")
    n.put(K.NAME, d.family())
    n.say(",\n\nThank you for seeing ")
    n.put(K.NAME, d.full_name(casing="title"))
    n.say(" (DOB ")
    n.put(K.DATE, d.date())
    n.say("), a ")
    _years, age = d.age()
    n.put(K.AGE, age)
    n.say(" year old retired teacher with atrial fibrillation. " + d.filler())
    n.say("Please call my office at ")
    n.put(K.PHONE, d.phone())
    n.say(" or fax results to ")
    n.put(K.FAX, d.phone())
    n.say(".\n\nSincerely,\n")
    n.put(K.NAME, d.full_name(casing="title"))
    n.say(", MD\n")
    return n


def _phone_call(d: _Draw) -> Note:
    n = Note("telephone encounter")
    given, family = d.given(), d.family()
    n.say("Telephone encounter ")
    n.put(K.DATE, d.date())
    n.say(". Spoke with ")
    n.put(K.NAME, f"{given} {family}")
    n.say(", the patient's caregiver, at ")
    n.put(K.PHONE, d.phone())
    n.say(". She asked that results be e-mailed to ")
    n.put(K.EMAIL, d.email(given, family))
    n.say(". " + d.filler(1))
    n.say("Pharmacy in ")
    city, _, _ = d.pick(CITIES)
    n.put(K.CITY, city)
    n.say(" notified.\n")
    return n


def _registration(d: _Draw) -> Note:
    n = Note("registration form")
    given, family = d.given(), d.family()
    city, state, zip_code = d.pick(CITIES)
    n.say("PATIENT REGISTRATION\nName: ")
    n.put(K.NAME, f"{family.upper()}, {given.upper()}")
    n.say("\nSSN: ")
    n.put(K.SSN, d.ssn())
    n.say("\nMailing address: ")
    n.put(K.PO_BOX, d.po_box())
    n.say(", ")
    n.put(K.CITY, city)
    n.say(", " + state + " ")
    n.put(K.ZIP, zip_code)
    n.say("\nHome: ")
    n.put(K.STREET, d.street())
    n.say("\nPhone: ")
    n.put(K.PHONE, d.phone())
    n.say("   Fax: ")
    n.put(K.FAX, d.phone())
    n.say("\nEmail: ")
    n.put(K.EMAIL, d.email(given, family))
    n.say("\nMedical record number: ")
    n.put(K.MRN, d.mrn())
    n.say("\nBilling account: ")
    n.put(K.ACCOUNT, d.account())
    n.say("\n")
    return n


def _portal(d: _Draw) -> Note:
    n = Note("patient portal message")
    given, family = d.given(), d.family()
    n.say("Portal message received ")
    n.put(K.DATE, d.date())
    n.say(" from IP ")
    n.put(K.IP, d.ip())
    n.say(" via ")
    n.put(K.URL, d.url())
    n.say('.\n"Hi, this is ')
    n.put(K.NAME, given.lower() if d.rng.random() < 0.3 else given)
    n.say(" ")
    n.put(K.NAME, family)
    n.say(". My mother is ")
    _years, age = d.age()
    n.put(K.AGE, age)
    n.say(" now and still lives alone in ")
    city, _, _ = d.pick(CITIES)
    n.put(K.CITY, city)
    n.say(". Can she get a flu shot? My cell is ")
    n.put(K.PHONE, d.phone())
    n.say('."\n' + d.filler(1) + "\n")
    return n


def _social_work(d: _Draw) -> Note:
    n = Note("social work note")
    n.say("Social work: met with patient and niece ")
    n.put(K.NAME, d.full_name(casing="title"))
    n.say(". Patient, aged ")
    years, _age = d.age()
    n.put(K.AGE, str(years))
    n.say(", moved from ")
    city, _, _ = d.pick(CITIES)
    n.put(K.CITY, city)
    n.say(" to ")
    n.put(K.FACILITY, d.pick(FACILITIES))
    n.say(" on ")
    n.put(K.DATE, d.date())
    n.say(". Medicaid application pending; SSN ")
    n.put(K.SSN, d.ssn())
    n.say(" verified. Lives at ")
    n.put(K.STREET, d.street())
    n.say(". " + d.filler(1) + "\n")
    return n


def _radiology(d: _Draw) -> Note:
    n = Note("radiology report")
    n.say("EXAM: CT chest with contrast\nPATIENT: ")
    n.put(K.NAME, d.full_name(casing="caps"))
    n.say("  MR#: ")
    n.put(K.MRN, d.mrn())
    n.say("  DOS: ")
    n.put(K.DATE, d.date())
    n.say("\nCOMPARISON: ")
    n.put(K.DATE, d.date())
    n.say(" at ")
    n.put(K.FACILITY, d.pick(FACILITIES))
    n.say(".\nFINDINGS: No pulmonary embolism. " + d.filler(1))
    n.say("\nImages: ")
    n.put(K.URL, d.url())
    n.say(" (PACS node ")
    n.put(K.IP, d.ip())
    n.say(")\nDictated by: ")
    n.put(K.NAME, d.full_name())
    n.say("\n")
    return n


def _consult(d: _Draw) -> Note:
    n = Note("consult note")
    _years, age = d.age()
    n.say("Geriatrics consult requested by ")
    n.say(d.pick(["Dr. ", "Prof. ", "Nurse "]))
    n.put(K.NAME, d.full_name(casing="title"))
    n.say(" for a ")
    n.put(K.AGE, age)
    n.say("-year-old with delirium. ")
    n.say("The patient, ")
    n.put(K.NAME, d.full_name(casing="title"))
    n.say(", was transferred from ")
    n.put(K.FACILITY, d.pick(FACILITIES))
    n.say(" yesterday. " + d.filler(2))
    n.say("Old records faxed from ")
    n.put(K.FAX, d.phone())
    n.say(". Account ")
    n.put(K.ACCOUNT, d.account())
    n.say(" flagged for review.\n")
    return n


def _nursing(d: _Draw) -> Note:
    n = Note("nursing note")
    given = d.given()
    n.say("0700 ")
    n.put(K.DATE, d.date())
    n.say(": ")
    n.put(K.NAME, given)
    n.say(" slept well. Husband ")
    n.put(K.NAME, f"{d.given()} {d.family()}")
    n.say(" called from ")
    n.put(K.CITY, d.pick(CITIES)[0])
    n.say(" and asked that mail go to ")
    n.put(K.PO_BOX, d.po_box())
    n.say(". " + d.filler(2))
    n.say("Handed over to ")
    n.put(K.NAME, d.full_name())
    n.say(", RN.\n")
    return n


def _billing(d: _Draw) -> Note:
    n = Note("billing note")
    n.say("Claim for ")
    n.put(K.NAME, d.full_name(casing="last_first"))
    n.say(", acct no. ")
    n.put(K.ACCOUNT, d.account())
    n.say(", SSN ")
    n.put(K.SSN, d.ssn())
    n.say(", MRN ")
    n.put(K.MRN, d.mrn())
    n.say(", service date ")
    n.put(K.DATE, d.date())
    n.say(" at ")
    n.put(K.FACILITY, d.pick(FACILITIES))
    n.say(". Guarantor address ")
    n.put(K.STREET, d.street())
    n.say(", ")
    city, state, zip_code = d.pick(CITIES)
    n.put(K.CITY, city)
    n.say(" " + state + " ")
    n.put(K.ZIP, zip_code)
    n.say(". Questions: ")
    n.put(K.EMAIL, d.email(d.given(), d.family()))
    n.say("\n")
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
