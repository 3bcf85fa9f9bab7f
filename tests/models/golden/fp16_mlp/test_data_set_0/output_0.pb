
BprobsJJ1􉹄~23-39�*x3C18v.