"""Word pools for the fifth synthetic note set (`tests/deid_notes_fifth.py`).

Written from general knowledge, without reading the de-identifier or the other note sets. Names come
from many origins so that a finder's given-name list cannot carry the score; facilities include ones
known only by a bare name; streets include non-English street words.
"""

from __future__ import annotations

# (given names, family names) by origin; some given names are also English words or months.
NAMES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "east_asian": (
        ("Wei", "Mei-Ling", "Hiroshi", "Yuki", "Ji-woo", "Min-jun", "Seo-yeon", "Haruto", "Xiaoling", "Thanh"),
        ("Zhang", "Liu", "Nakamura", "Takahashi", "Park", "Choi", "Nguyen", "Tran", "Huang", "Yamaguchi"),
    ),
    "south_asian": (
        ("Priya", "Arjun", "Lakshmi", "Venkatesh", "Ananya", "Rohan", "Farhana", "Sanjay", "Deepika", "Gurpreet"),
        ("Ramaswamy", "Iyer", "Chatterjee", "Patel", "Gupta", "Reddy", "Bhattacharya", "Siddiqui", "Krishnamurthy", "Sandhu"),
    ),
    "african": (
        ("Chidi", "Ngozi", "Kwame", "Abena", "Oluwaseun", "Thandiwe", "Tendai", "Amara", "Yaw", "Folasade"),
        ("Okonkwo", "Adeyemi", "Mensah", "Boateng", "Nwosu", "Dlamini", "Mutasa", "Kamau", "Abiodun", "Ochieng"),
    ),
    "arabic": (
        ("Fatima", "Omar", "Yusuf", "Layla", "Khalid", "Noor", "Hassan", "Mariam", "Tariq", "Rania"),
        ("Al-Sayed", "Haddad", "Mansour", "Khoury", "El-Amin", "Abdelrahman", "Nasser", "Al-Farsi", "Saleh", "Qureshi"),
    ),
    "hispanic": (
        ("Guadalupe", "Alejandro", "Ximena", "Joaquín", "Mariana", "Itzel", "Rodrigo", "Consuelo", "Esteban", "Yesenia"),
        ("Hernández", "Villanueva", "de la Cruz", "Quispe", "Zamora", "Ochoa", "Castañeda", "Iturbide", "Mendoza", "Paredes"),
    ),
    "slavic": (
        ("Dmitri", "Katarzyna", "Bogdan", "Ludmila", "Wojciech", "Milena", "Zoran", "Oksana", "Yaroslav", "Jelena"),
        ("Kowalczyk", "Ivanova", "Petrović", "Nowak", "Szymański", "Horvat", "Dvořák", "Shevchenko", "Wiśniewska", "Kuznetsov"),
    ),
    "nordic": (
        ("Sigrid", "Bjørn", "Astrid", "Henrik", "Solveig", "Eero", "Freyja", "Torbjörn", "Ingrid", "Aksel"),
        ("Lindqvist", "Halvorsen", "Johansson", "Virtanen", "Sigurðsson", "Bergström", "Østergaard", "Mäkinen", "Haugen", "Nyström"),
    ),
    "irish": (
        ("Siobhán", "Padraig", "Niamh", "Eoin", "Aoife", "Ciarán", "Gráinne", "Oisín", "Róisín", "Declan"),
        ("O'Sullivan", "MacNamara", "Ní Bhriain", "Ó Ceallaigh", "Fitzgerald", "McGillicuddy", "Donnelly", "Ó Súilleabháin", "Kavanagh", "Breathnach"),
    ),
    "jewish": (
        ("Avraham", "Rivka", "Shoshana", "Yitzhak", "Moshe", "Tova", "Eliezer", "Chaya", "Mordechai", "Devorah"),
        ("Goldberg", "Rosenblum", "Katz", "Birnbaum", "Shapiro", "Ben-David", "Feldman", "Mizrahi", "Horowitz", "Abramovitz"),
    ),
    "pacific": (
        ("Aroha", "Keanu", "Malia", "Sione", "Leilani", "Tevita", "Moana", "Kawika", "Losaline", "Wiremu"),
        ("Kealoha", "Tuilagi", "Fonoti", "Ngata", "Kahananui", "Taufa", "Mahe", "Faleolo", "Tupou", "Kaleikini"),
    ),
    "word_like": (
        ("Hope", "Grace", "June", "Will", "Rose", "Faith", "Summer", "Joy", "Major", "April"),
        ("Baker", "Young", "Hill", "Brown", "Wood", "Rich", "Cross", "Fox", "Walker", "Gay"),
    ),
}  # fmt: skip

MIDDLE_INITIALS = "ABCDEFGHJKLMNRSTW"

# Facilities: composed from a stem and a kind, or known only by a bare name.
FACILITY_STEMS = (
    "St. Brigid's", "Saint Vincent", "Mercy", "Holy Cross", "Good Samaritan", "Beth Israel Deaconess",
    "Our Lady of Lourdes", "Lakeshore", "Riverbend", "Pinecrest", "Three Rivers", "Kuakini", "Al Noor",
    "Santa Rosa", "San Gabriel Valley", "Nuestra Señora de Guadalupe", "Mount Carmel", "Cedar Hollow",
    "Northgate", "Sacred Heart", "Kalihi Palama", "Tamarack", "Blue Heron", "Willow Creek", "Harbor Bay",
)  # fmt: skip
FACILITY_KINDS = {
    "hospital": ("Hospital", "Medical Center", "Regional Medical Center", "Community Hospital", "Memorial Hospital", "Children's Hospital"),
    "clinic": ("Clinic", "Family Health Center", "Community Health Center", "Women's Clinic", "Primary Care Associates", "Urgent Care"),
    "nursing": ("Nursing and Rehabilitation Center", "Skilled Nursing Facility", "Care Home", "Assisted Living", "Hospice House", "Manor"),
    "dental": ("Dental Associates", "Family Dentistry", "Oral Surgery Group"),
    "lab": ("Pathology Associates", "Reference Laboratory", "Imaging Center", "Diagnostic Imaging"),
    "pharmacy": ("Pharmacy", "Apothecary", "Specialty Pharmacy"),
}  # fmt: skip
BARE_FACILITIES = (
    "Maplewood", "Larkspur House", "Sunnyside Manor", "Harborview", "Bellevue", "Grady", "Parkland",
    "Hennepin", "Kapiolani", "Tripler", "Brookfield", "Rosewood Gardens", "Whispering Pines", "Golden Acres",
    "Shady Oaks", "Fairhaven", "Elmcrest", "Stonebridge",
)  # fmt: skip

# (city, state) pairs: states are not Safe Harbor identifiers and stay in the text.
CITIES = (
    ("Worcester", "MA"), ("Lowell", "MA"), ("Springfield", "IL"), ("Albuquerque", "NM"), ("Las Cruces", "NM"),
    ("Hilo", "HI"), ("Kailua-Kona", "HI"), ("Dearborn", "MI"), ("Hamtramck", "MI"), ("Yonkers", "NY"),
    ("Laredo", "TX"), ("Brownsville", "TX"), ("Fargo", "ND"), ("Duluth", "MN"), ("Saint Paul", "MN"),
    ("Sioux Falls", "SD"), ("Poughkeepsie", "NY"), ("Bangor", "ME"), ("Tacoma", "WA"), ("Spokane", "WA"),
    ("Chattanooga", "TN"), ("Baton Rouge", "LA"), ("El Paso", "TX"), ("Pueblo", "CO"), ("Fresno", "CA"),
    ("Santa Fe", "NM"), ("Kalamazoo", "MI"), ("Paterson", "NJ"), ("Lewiston", "ME"), ("Bethlehem", "PA"),
)  # fmt: skip
STATE_NAMES = {"MA": "Massachusetts", "IL": "Illinois", "NM": "New Mexico", "HI": "Hawaii", "MI": "Michigan",
               "NY": "New York", "TX": "Texas", "ND": "North Dakota", "MN": "Minnesota", "SD": "South Dakota",
               "ME": "Maine", "WA": "Washington", "TN": "Tennessee", "LA": "Louisiana", "CO": "Colorado",
               "CA": "California", "NJ": "New Jersey", "PA": "Pennsylvania"}  # fmt: skip
FOREIGN_CITIES = ("Guadalajara", "Lagos", "Chennai", "Kraków", "Tromsø", "Cork", "Nablus", "Haifa", "Nukuʻalofa", "Da Nang")  # fmt: skip

STREET_NAMES = ("Maple", "Elm", "Kalanianaole", "Chestnut", "Martin Luther King Jr.", "Juniper", "Wabash", "Piikoi", "Orchard", "Quincy", "Magnolia", "Birchwood")  # fmt: skip
STREET_TYPES = ("Street", "St.", "Avenue", "Ave", "Road", "Rd.", "Boulevard", "Blvd", "Lane", "Drive", "Dr.", "Way", "Court", "Terrace", "Place", "Highway")  # fmt: skip
# Street words that come first (number, then the street word and its name).
FOREIGN_STREETS = (
    "Calle del Sol", "Avenida de los Pinos", "Camino Real", "Rue Saint-Denis", "Via Garibaldi", "Rua das Flores",
    "Paseo del Norte", "Calle Ocho", "Avenida Juárez", "Rue des Érables", "Camino de la Luz", "Via Appia",
)  # fmt: skip
GERMANIC_STREETS = ("Kirchstrasse", "Lindenweg", "Bahnhofstraße", "Storgatan", "Havnegade")  # fmt: skip
DIRECTIONS = ("N.", "S.", "East", "West", "NE", "")  # fmt: skip
UNITS = ("Apt 4B", "Apt. 12", "Unit 7", "#303", "Suite 210", "Trailer 14", "Lot 22")  # fmt: skip

EMAIL_DOMAINS = ("gmail.com", "yahoo.com", "outlook.com", "hotmail.co.uk", "proton.me", "icloud.com", "comcast.net", "mail.ru")  # fmt: skip
WEB_HOSTS = ("mychart.stbrigids.org", "portal.lakeshorehealth.net", "www.caringbridge.org", "telehealth.riverbend-med.com", "records.mercyregional.org", "www.gofundme.com", "patient.kuakini.org")  # fmt: skip

# Clinical look-alikes the finders must keep (never planted).
EPONYMS = ("Parkinson disease", "Alzheimer dementia", "Graves disease", "Crohn's disease", "Hodgkin lymphoma",
           "Cushing syndrome", "Addison disease", "Wilson disease", "Bell's palsy", "a positive Babinski sign",
           "Hashimoto thyroiditis", "Guillain-Barré syndrome", "Barrett esophagus", "Sjögren syndrome",
           "a Glasgow Coma Scale of 15", "Down syndrome", "Tourette syndrome", "Kaposi sarcoma")  # fmt: skip
DRUGS = ("metoprolol succinate 25 mg daily", "apixaban 5 mg BID", "furosemide 40 mg IV", "levetiracetam 500 mg BID",
         "insulin glargine 18 units at bedtime", "sertraline 50 mg", "Eliquis 2.5 mg", "Lasix 20 mg PO",
         "amoxicillin 875 mg q12h", "oxycodone 5 mg q4h PRN", "Keppra 750 mg", "lisinopril 10 mg",
         "atorvastatin 80 mg nightly", "ondansetron 4 mg IV q6h PRN", "heparin 5,000 units subcut q8h",
         "vancomycin 1.25 g q12h", "Zoloft 100 mg", "prednisone 40 mg taper")  # fmt: skip
HOLIDAYS = ("since Christmas", "over Thanksgiving", "around Easter", "before Ramadan", "after Diwali",
            "during Lunar New Year", "since Labor Day", "over the Fourth of July weekend", "after Passover")  # fmt: skip
SPINE_LEVELS = ("L4-L5", "C5-C6", "T12", "L5-S1", "C2", "T4-T6", "S1")  # fmt: skip
