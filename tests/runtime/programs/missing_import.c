/* Imports a host function that meshagent does not provide. */
__attribute__((import_module("mesh"), import_name("teleport"))) int teleport(int);
int main(void) { return teleport(1); }
