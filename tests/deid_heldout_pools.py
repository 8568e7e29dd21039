"""Word pools for the held-out de-identification notes (`tests/deid_notes_heldout.py`).

Written from general knowledge of naming customs and of how US clinical records name places, without
looking at the de-identifier or at the two older note generators, so that the held-out figures measure
how the de-identifier does on notes it was not tuned to. Names come from many origins, with the forms a
registration desk actually produces: family name first (Chinese, Vietnamese, Korean), two family names
(Hispanic), particles (de la, van der, Al-, bin), hyphenated and compound given names, and diacritics next
to their ASCII spellings. Some given names are also ordinary English words or month names (Hope, Grace,
Will, June), and some family names are colours or adjectives (Brown, White, Young, Long): real notes
have them, and a de-identifier must not rely on a name being an unusual word.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Origin:
    """Given names by sex, family names, and whether the family name is written first in the origin's
    own order (the note may still use the Western order, as US registration systems often do)."""

    name: str
    female: tuple[str, ...]
    male: tuple[str, ...]
    family: tuple[str, ...]
    family_first: bool = False


# fmt: off
ORIGINS: tuple[Origin, ...] = (
    Origin(
        "west_african",
        female=("Adaeze", "Chiamaka", "Ngozi", "Folasade", "Yetunde", "Abena", "Akosua", "Efua", "Aissatou",
                "Fatoumata", "Ifeoma", "Titilayo", "Nneka", "Bisola", "Adjoa", "Mariama", "Oluwakemi", "Zainab"),
        male=("Chukwuemeka", "Oluwaseun", "Babatunde", "Kwame", "Kofi", "Yaw", "Kwabena", "Ousmane", "Mamadou",
              "Abdoulaye", "Ikechukwu", "Obinna", "Adebayo", "Tunde", "Nnamdi", "Sekou", "Cheikh", "Modou"),
        family=("Okafor", "Adeyemi", "Okonkwo", "Mensah", "Asante", "Boateng", "Owusu", "Diallo", "Ndiaye",
                "Balogun", "Eze", "Nwosu", "Oyelaran", "Ogunleye", "Danjuma", "Bello", "Traoré", "Keita",
                "Ofori", "Appiah", "Agyeman", "Nwachukwu", "Oduya", "Sow"),
    ),
    Origin(
        "east_african",
        female=("Selam", "Tigist", "Hodan", "Ayaan", "Faduma", "Meseret", "Wanjiru", "Achieng", "Hiwot"),
        male=("Dawit", "Yohannes", "Liban", "Abdirahman", "Tesfaye", "Kiprono", "Otieno", "Bereket", "Mulugeta"),
        family=("Abebe", "Tesfaye", "Haile", "Mekonnen", "Warsame", "Abdi", "Kariuki", "Odhiambo", "Gebremedhin",
                "Mohamud", "Wolde", "Njoroge"),
    ),
    Origin(
        "chinese",
        female=("Xiuying", "Yan", "Jing", "Mei", "Hui", "Yuting", "Lijuan", "Fang", "Shu-fen", "Wing-yee",
                "Xiaoling", "Qian"),
        male=("Wei", "Xiaoming", "Jianguo", "Haoran", "Zhiwei", "Guoqiang", "Ming", "Jun", "Ka-wai", "Siu-ming",
              "Zhenyu", "Tao"),
        family=("Wang", "Zhang", "Liu", "Chen", "Yang", "Huang", "Zhao", "Wu", "Zhou", "Xu", "Sun", "Zhu",
                "Guo", "Lin", "Luo", "Gao", "Cheung", "Wong", "Chan", "Leung", "Lau", "Tsang", "Ng", "Kwok"),
        family_first=True,
    ),
    Origin(
        "vietnamese",
        female=("Thi Lan", "Thi Huong", "Thi Mai", "Ngoc Linh", "Thi Thao", "Thu Trang", "Thi Hoa", "Phuong Anh",
                "Thị Hương", "Ngọc Ánh", "Thanh Thuy"),
        male=("Van Tuan", "Van Hung", "Minh Duc", "Quang Huy", "Van Hai", "Duc Anh", "Thanh Long", "Văn Dũng",
              "Minh Khoa", "Bao"),
        family=("Nguyen", "Tran", "Le", "Pham", "Hoang", "Huynh", "Phan", "Vu", "Vo", "Dang", "Bui", "Ngo",
                "Duong", "Ly", "Nguyễn", "Trần", "Phạm", "Hoàng"),
        family_first=True,
    ),
    Origin(
        "korean_japanese",
        female=("Ji-woo", "Seo-yeon", "Eun-ji", "Min-seo", "Yuki", "Sakura", "Aiko", "Haruka", "Keiko"),
        male=("Min-jun", "Hyun-woo", "Sung-ho", "Jae-won", "Hiroshi", "Haruto", "Kenji", "Takeshi", "Daisuke"),
        family=("Kim", "Park", "Choi", "Jung", "Kang", "Yoon", "Sato", "Suzuki", "Takahashi", "Tanaka",
                "Watanabe", "Yamamoto", "Nakamura", "Kobayashi"),
    ),
    Origin(
        "arabic",
        female=("Fatima", "Aisha", "Mariam", "Layla", "Noor", "Rania", "Huda", "Yasmin", "Amal", "Salma",
                "Samira", "Hanan", "Dalia", "Reem"),
        male=("Mohammed", "Ahmad", "Abdullah", "Omar", "Khalid", "Yousef", "Tariq", "Hassan", "Karim", "Walid",
              "Abdul Rahman", "Abdel Aziz", "Mahmoud", "Ibrahim", "Mustafa"),
        family=("Al-Masri", "Al-Rashid", "Haddad", "Khoury", "Nasser", "Hamdan", "Saleh", "Abdallah", "El-Sayed",
                "Mansour", "Farouk", "Darwish", "Ghanem", "Yassin", "Al Habsi", "bin Saleh", "Abu Khalil",
                "Al-Amin", "Qasim"),
    ),
    Origin(
        "persian_turkish",
        female=("Parisa", "Shirin", "Maryam", "Niloufar", "Ayşe", "Elif", "Zeynep", "Fatemeh"),
        male=("Reza", "Dariush", "Farhad", "Mehdi", "Mehmet", "Emre", "Mustafa", "Babak"),
        family=("Hosseini", "Tehrani", "Mohammadi", "Rezaei", "Karimi", "Yılmaz", "Yilmaz", "Demir", "Kaya",
                "Öztürk", "Ozturk", "Sahin"),
    ),
    Origin(
        "slavic",
        female=("Olga", "Svetlana", "Natalia", "Yulia", "Oksana", "Katarzyna", "Agnieszka", "Małgorzata",
                "Malgorzata", "Milena", "Jelena", "Anastasia", "Irina", "Zofia", "Halyna", "Ludmila"),
        male=("Dmitri", "Sergei", "Vladimir", "Oleksandr", "Bohdan", "Tomasz", "Piotr", "Łukasz", "Lukasz",
              "Jakub", "Miroslav", "Dragan", "Nikola", "Goran", "Yaroslav", "Andriy", "Vasyl", "Jiří"),
        family=("Ivanova", "Petrov", "Kowalski", "Kowalska", "Nowak", "Wiśniewski", "Wisniewski", "Shevchenko",
                "Kovalenko", "Bondarenko", "Novák", "Dvořák", "Dvorak", "Popović", "Jovanovic", "Petrović",
                "Kuznetsov", "Sokolova", "Lewandowski", "Wójcik", "Zielinski", "Tkachenko", "Melnyk",
                "Szczepański"),
    ),
    Origin(
        "hispanic",
        female=("María José", "Guadalupe", "Ximena", "Lucía", "Carmen", "Rosa María", "Maricela", "Yesenia",
                "Dolores", "Marisol", "Esperanza", "Consuelo", "Alejandra", "Maria", "Lucia"),
        male=("José", "Juan Carlos", "Luis", "Miguel Ángel", "Jesús", "Alejandro", "Santiago", "Héctor", "Raúl",
              "Francisco", "Javier", "Jose", "Jesus", "Hector"),
        family=("García", "Hernández", "Martínez", "López", "González", "Rodríguez", "Pérez", "Sánchez",
                "Ramírez", "Flores", "Gómez", "Díaz", "Reyes", "Morales", "Cruz", "Ortiz", "Gutiérrez",
                "Chávez", "Ramos", "Vásquez", "Castillo", "Jiménez", "de la Cruz", "del Toro", "de León",
                "Garcia", "Hernandez", "Martinez", "Gonzalez", "Rodriguez", "Ramirez", "Santos", "Villanueva",
                "Bautista", "dela Cruz", "Mendoza"),
    ),
    Origin(
        "south_asian",
        female=("Priya", "Lakshmi", "Ananya", "Deepika", "Sunita", "Meenakshi", "Kavitha", "Nusrat", "Farzana",
                "Shabnam", "Parveen", "Anjali", "Harpreet", "Simran", "Tahmina", "Nirmala"),
        male=("Rajesh", "Arjun", "Vikram", "Sanjay", "Imran", "Faisal", "Venkatesh", "Gurpreet", "Rahul",
              "Anil", "Sandeep", "Karthik", "Tanvir", "Rafiq", "Muhammad Ali", "Subramanian"),
        family=("Patel", "Sharma", "Singh", "Kaur", "Gupta", "Reddy", "Iyer", "Krishnan", "Venkataraman",
                "Chowdhury", "Rahman", "Hossain", "Khan", "Qureshi", "Siddiqui", "Bhattacharya", "Mukherjee",
                "Nair", "Pillai", "Menon", "Desai", "Joshi", "Rao", "Ahmed", "Chaudhry", "Sandhu", "Gill",
                "Thangavelu", "Perera", "Jayasuriya"),
    ),
    Origin(
        "haitian_french",
        female=("Marie-Ange", "Wideline", "Guerline", "Nadège", "Fabienne", "Rose-Marie", "Mirlande"),
        male=("Jean-Claude", "Fritznel", "Jean-Robert", "Wilner", "Pierre", "Jean-Baptiste", "Réginald"),
        family=("Jean-Baptiste", "Pierre-Louis", "Toussaint", "Desir", "Célestin", "Joseph", "Charles",
                "Dorval", "Augustin", "Saint-Fleur", "Lafontant"),
    ),
    Origin(
        "european",
        female=("Mary", "Elizabeth", "Margaret", "Dorothy", "Eileen", "Siobhan", "Grace", "Hope", "Faith",
                "Rose", "June", "Ingrid", "Bridget", "Maeve", "Giulia", "Anneke", "Eleni", "Zoë", "Sarah",
                "Rachel", "Ruth", "Joan", "Bonnie", "Patience"),
        male=("James", "Robert", "William", "Thomas", "Patrick", "Sean", "Connor", "Liam", "Graham", "Douglas",
              "Guy", "Will", "Mark", "Frank", "Hans", "Giovanni", "Pieter", "Søren", "Dimitrios", "Miles",
              "Chase", "Cliff", "Dale"),
        family=("Smith", "Johnson", "O'Brien", "O'Connor", "McAllister", "MacDonald", "Fitzgerald", "Sullivan",
                "Murphy", "Brown", "White", "Young", "Hill", "Long", "Moore", "King", "Baker", "Wood", "Schmidt",
                "Müller", "Mueller", "Rossi", "Esposito", "Romano", "van der Meer", "van den Berg", "De Vries",
                "Papadopoulos", "Konstantinidis", "Andersson", "Kjær", "Goldberg", "Cohen", "Levi",
                "Friedman", "Rosenbaum", "Whitfield", "Carpenter", "Fields", "Marsh", "Street", "Banks"),
    ),
)

# Places a facility's name is built from: invented descriptive words (as most community hospitals are
# named) and town names.
FACILITY_PLACE_WORDS = (
    "Lakeside", "Riverbend", "Cedar Ridge", "Maple Grove", "Harborview", "Northshore", "Pinecrest",
    "Willow Creek", "Bayview", "Summit", "Highland", "Fairview", "Brookside", "Oakwood", "Stonebridge",
    "Meadowbrook", "Silver Lake", "Golden Valley", "Eastgate", "Westfield", "Red Rock", "Prairie View",
    "Blue Hills", "Seacoast", "Three Rivers", "Copper Canyon", "Elmhurst", "Hawthorne", "Juniper",
)
FACILITY_SAINTS = (
    "St. Brigid's", "Saint Elizabeth's", "St. Luke's", "St. Vincent", "St. Anne's", "Saint Joseph",
    "St. Raphael", "Our Lady of Lourdes", "Sacred Heart", "Good Samaritan", "Holy Cross", "Mercy",
    "Providence", "St. Francis", "Santa Rosa", "San Gabriel",
)
# A facility's kind, as its name ends.
HOSPITAL_SUFFIXES = (
    "Hospital", "Medical Center", "General Hospital", "Regional Medical Center", "Community Hospital",
    "Memorial Hospital", "Health Center", "University Hospital", "Children's Hospital",
)
OTHER_FACILITY_SUFFIXES = (
    "Rehabilitation Center", "Nursing and Rehabilitation", "Nursing Home", "Skilled Nursing Facility",
    "Hospice", "Dialysis Center", "Urgent Care", "Family Practice", "Health Clinic", "Behavioral Health",
    "Assisted Living", "Senior Living", "Cancer Institute", "Eye Associates", "Pharmacy", "Imaging Center",
    "Surgical Center", "Pediatrics",
)
# Well known hospital names, whose forms (no suffix, a person's name in them) a generic pattern misses.
NAMED_FACILITIES = (
    "Beth Israel Deaconess Medical Center", "Mount Sinai Hospital", "Brigham and Women's Hospital",
    "Johns Hopkins Hospital", "Cedars-Sinai", "Mayo Clinic", "Cleveland Clinic", "Dana-Farber",
    "Massachusetts General Hospital", "Boston Medical Center", "Shriners Hospital for Children",
    "Kaiser Permanente Oakland", "NewYork-Presbyterian", "Hospital for Special Surgery", "Spaulding Rehab",
    "Walter Reed", "Children's Hospital of Philadelphia", "Tufts Medical Center", "Lahey Clinic",
)

# Cities, towns, neighbourhoods and counties (all geographic units smaller than a state): US places,
# some of which are also given or family names (Chelsea, Quincy, Lowell, Marion), and places abroad
# that appear in travel and migration histories.
US_PLACES: tuple[tuple[str, str, str], ...] = (
    # (city, state abbreviation, a ZIP prefix of the area)
    ("Lowell", "MA", "018"), ("Dorchester", "MA", "021"), ("Brockton", "MA", "023"), ("Chelsea", "MA", "021"),
    ("Quincy", "MA", "021"), ("Framingham", "MA", "017"), ("Worcester", "MA", "016"), ("Fall River", "MA", "027"),
    ("Springfield", "IL", "627"), ("Fresno", "CA", "937"), ("Tucson", "AZ", "857"), ("Toledo", "OH", "436"),
    ("Dayton", "OH", "454"), ("Macon", "GA", "312"), ("Flint", "MI", "485"), ("Hialeah", "FL", "330"),
    ("Yonkers", "NY", "107"), ("Paterson", "NJ", "075"), ("Marion", "IN", "469"), ("Garden Grove", "CA", "928"),
    ("Westminster", "CA", "926"), ("Dearborn", "MI", "481"), ("Minneapolis", "MN", "554"), ("Lewiston", "ME", "042"),
    ("Cedar Rapids", "IA", "524"), ("El Paso", "TX", "799"), ("Sugar Land", "TX", "774"), ("Hamtramck", "MI", "482"),
    ("Jackson Heights", "NY", "113"), ("Flushing", "NY", "113"), ("Camden", "NJ", "081"), ("Lawrence", "MA", "018"),
    ("Providence", "RI", "029"), ("Bridgeport", "CT", "066"), ("Silver Spring", "MD", "209"), ("Bellevue", "WA", "980"),
    ("Duluth", "MN", "558"), ("Santa Ana", "CA", "927"), ("Kalamazoo", "MI", "490"), ("Burlington", "VT", "054"),
)
COUNTIES = (
    "Middlesex County", "Essex County", "Cook County", "Kings County", "Cuyahoga County", "Maricopa County",
    "Hennepin County", "Bristol County", "Harris County", "Wayne County", "Plymouth County",
)
ABROAD = (
    "Lagos", "Accra", "Kumasi", "Dakar", "Addis Ababa", "Mogadishu", "Hanoi", "Ho Chi Minh City", "Da Nang",
    "Guangzhou", "Fuzhou", "Karachi", "Dhaka", "Lahore", "Chennai", "Aleppo", "Mosul", "Kyiv", "Lviv",
    "Guadalajara", "San Salvador", "Port-au-Prince", "Cap-Haïtien", "Manila", "Seoul", "Tehran", "Izmir",
    "Kraków",
)
STREET_NAMES = (
    "Magnolia", "Washington", "Blue Hill", "Dudley", "Elm", "Maple", "Jefferson", "Martin Luther King Jr",
    "Cesar Chavez", "Harbor", "Chestnut", "Centre", "Columbia", "Lincoln", "Mill", "Pleasant", "Quarry",
    "Riverside", "Sycamore", "Tremont", "Walnut", "Commonwealth", "Dorchester", "Juniper Hill", "Old Mill",
    "Orchard", "Prospect", "Spring", "Water", "Willow", "Broadway", "Ocean", "Highland",
)
STREET_TYPES = (
    "St", "Street", "Ave", "Avenue", "Rd", "Road", "Blvd", "Boulevard", "Lane", "Ln", "Drive", "Dr",
    "Court", "Ct", "Way", "Terrace", "Place", "Pkwy", "Circle", "Hwy",
)
# fmt: on
