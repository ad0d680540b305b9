"""Which model a call goes to: an explicit spec resolved (resolve), `auto` chosen by task and
preference (auto), and the decision both make (route)."""
