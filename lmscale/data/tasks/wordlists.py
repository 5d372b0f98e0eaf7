"""Data stage: small built-in English word lists (no NLTK download at run time).

FIVE_LETTER_WORDS feed the generated "reverse natural content" task (BIG-bench's
unnatural in-context learning reverses real 5-letter words). COMMON_WORDS is the
stop-word style list the "targets that are common words" filter uses in place of NLTK's
(Hu et al., App. D.5, e.g. the movie "it"); pass your own list to the filter to change it.
"""

FIVE_LETTER_WORDS = tuple("""
about above acted actor adult after again agent agree ahead alarm album alert alike alive
allow alone along alter among angle angry apple apply arena argue arise array aside asset
audio award aware basic beach began begin being below bench birth black blade blame blank
blind block blood board boost bound brain brand bread break brick brief bring broad brown
build built buyer cable carry catch cause chain chair chart chase cheap check chest chief
child civil claim class clean clear climb clock close cloud coach coast could count court
cover craft crash cream crime cross crowd crown curve cycle daily dance death delay depth
doubt draft drama drawn dream dress drink drive eager early earth eight elite empty enemy
enjoy enter entry equal error event every exact exist extra faith false fault field fifth
fight final first floor focus force frame fresh front fruit funny giant given glass globe
grace grade grand grant grass great green group guard guess guest guide happy heart heavy
horse hotel house human ideal image index inner input issue joint judge knife known label
large laser later laugh layer learn least leave legal level light limit local logic loose
lucky lunch magic major maker march match maybe mayor medal metal minor model money month
moral motor mount mouse mouth movie music never night noise north novel nurse ocean offer
often order other outer owner paint panel paper party peace phase phone photo piece pilot
pitch place plain plane plant plate point pound power press price pride prime print prior
prize proof proud prove queen quick quiet quite radio raise range rapid ratio reach ready
refer relax reply right river robot rooms rough round route royal rural scale scene scope
score sense serve seven shade shake shape share sharp sheep sheet shelf shell shift shirt
shock shoot short sight skill sleep slide small smart smile smoke solid solve sound south
space spare speak speed spend sport staff stage stand start state steam steel stick still
stock stone store storm story strip study stuff style sugar suite super sweet table taken
taste teach thank theme there thick thing think third those three throw tight tired title
today topic total touch tough tower track trade train trend trial truck truly trust truth
twice under union unity until upper upset urban usage usual valid value video virus visit
vital voice waste watch water wheel where which while white whole woman world worry worth
would write wrong young youth
""".split())

COMMON_WORDS = frozenset("""
a about after again against all also an and another any are as at away back be because
been before being between both but by came can come could day did do does down each even
every few find first for from get give go good great had has have he her here him his how
i if in into is it its just know last left life like little long look made make man many
may me men might more most much must my never new no not now of off old on once one only
or other our out over own part people place put right said same saw say see she should show
since so some still such take tell than that the their them then there these they thing
think this those though three through time to too two under up upon us use very want was
way we well were what when where which while who why will with without work world would
year yes yet you young your up big bad high low home house love war water fire night
light dark star stars sun moon king queen boy girl mother father brother sister friend
friends family city town road car cars air land sea ship game games man men woman women
heart mind head eye eyes hand hands face door room dog cat bird fish tree love us go
gone it them up now here there thing things nothing something everything anything
""".split())
