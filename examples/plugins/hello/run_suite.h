/* One main() for the example's CUnit suites: a table of named tests, run
 * in basic mode; exit status 1 when any test failed, 2 when CUnit itself
 * failed. (The server's own suites use tests/sm_test.h, which an
 * out-of-tree plugin does not have.) */
#ifndef HELLO_RUN_SUITE_H
#define HELLO_RUN_SUITE_H

#include <CUnit/Basic.h>
#include <stdio.h>

typedef struct suite_test {
    const char *name;
    void (*fn)(void);
} suite_test;

#define SUITE_TEST(fn) { #fn, fn }

static inline int run_suite(const char *name, const suite_test *tests, int (*init)(void),
                            int (*cleanup)(void))
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 2;
    CU_pSuite suite = CU_add_suite(name, init, cleanup);
    for (const suite_test *t = tests; suite && t->name; t++)
        if (!CU_add_test(suite, t->name, t->fn))
            suite = NULL;
    if (!suite) {
        fprintf(stderr, "%s: CUnit error: %s\n", name, CU_get_error_msg());
        CU_cleanup_registry();
        return 2;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    int rc = CU_basic_run_tests() == CUE_SUCCESS ? 0 : 2;
    unsigned ran = CU_get_number_of_tests_run();
    if (rc == 0 && (ran == 0 || CU_get_number_of_tests_failed() + CU_get_number_of_failures() +
                                        CU_get_number_of_suites_failed() > 0))
        rc = 1;
    CU_cleanup_registry();
    return rc;
}

#endif
