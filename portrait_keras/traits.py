"""TF-free: the interpersonal relation traits of paper 004 (Table 2), for the relation model (§5).

The eight traits of the 1982 interpersonal circle. The paper's Tables 2 and 10 call the sixth
"involved"; its positive adjectives (Table 3) include "attached", the name issue #17 uses.
"""

TRAITS = ("dominant", "competitive", "trusting", "warm", "friendly", "attached", "demonstrative", "assured")
