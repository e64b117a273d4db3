/* A shared object without the descriptor symbol: must be refused. */
int no_descriptor_placeholder(void);
__attribute__((visibility("default"))) int no_descriptor_placeholder(void) { return 0; }
