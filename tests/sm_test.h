/* One main() for every CUnit suite: a table of named tests, run in basic
 * mode, exit status 1 when any assertion failed or CUnit itself failed. */
#ifndef SM_TEST_H
#define SM_TEST_H

#include <CUnit/Basic.h>
#include <stdio.h>

typedef struct sm_test_case {
    const char *name;
    void (*fn)(void);
} sm_test_case;

static inline int sm_test_run(const char *suite_name, const sm_test_case *cases,
                              int (*init)(void), int (*cleanup)(void))
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 2;
    CU_pSuite suite = CU_add_suite(suite_name, init, cleanup);
    if (!suite)
        goto fail;
    for (const sm_test_case *c = cases; c->name; c++)
        if (!CU_add_test(suite, c->name, c->fn))
            goto fail;
    CU_basic_set_mode(CU_BRM_VERBOSE);
    if (CU_basic_run_tests() != CUE_SUCCESS)
        goto fail;
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_suites_failed()
                      + CU_get_number_of_tests_failed();
    unsigned ran = CU_get_number_of_tests_run();
    CU_cleanup_registry();
    if (ran == 0) {
        fprintf(stderr, "%s: no test ran\n", suite_name);
        return 1;
    }
    return failed ? 1 : 0;
fail:
    fprintf(stderr, "%s: CUnit error: %s\n", suite_name, CU_get_error_msg());
    CU_cleanup_registry();
    return 2;
}

#define SM_TEST(fn) { #fn, fn }
#define SM_TEST_END { NULL, NULL }

#endif
