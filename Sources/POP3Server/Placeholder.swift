import POP3Core
