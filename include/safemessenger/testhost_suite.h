/* SafeMessenger SDK: one main() for a CUnit suite, such as a plugin's
 * suite on the test host (safemessenger/testhost.h). Header-only; needs
 * the CUnit headers and library (pkg-config module `cunit`).
 *
 * A suite is a table of named tests ending with SM_TEST_END:
 *
 *   int main(void)
 *   {
 *       static const sm_test_case tests[] = {
 *           SM_TEST(hello_needs_login),
 *           SM_TEST_END,
 *       };
 *       return sm_test_run("hello", tests, NULL, cleanup);
 *   }
 *
 * sm_test_run() registers the tests as one CUnit suite with the given
 * init and cleanup functions (either may be NULL; CUnit runs no cleanup
 * after a failed init), runs it in verbose basic mode and returns the
 * process exit status: 0 when every test passed, 1 when an assertion,
 * a test or the suite's init or cleanup failed, or no test ran, 2 when
 * CUnit itself failed. ctest and make treat anything but 0 as a failure. */
#ifndef SAFEMESSENGER_TESTHOST_SUITE_H
#define SAFEMESSENGER_TESTHOST_SUITE_H

#include <CUnit/Basic.h>
#include <stdio.h>

typedef struct sm_test_case {
    const char *name;
    void (*fn)(void);
} sm_test_case;

/* A table row named after the test function. */
#define SM_TEST(fn) { #fn, fn }
/* The row that ends the table. */
#define SM_TEST_END { NULL, NULL }

static inline int sm_test_run(const char *suite_name, const sm_test_case *cases,
                              int (*init)(void), int (*cleanup)(void))
{
    unsigned failed = 0, ran = 0; /* declared before the gotos: also valid C++ */
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
    failed = CU_get_number_of_failures() + CU_get_number_of_suites_failed()
             + CU_get_number_of_tests_failed();
    ran = CU_get_number_of_tests_run();
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

#endif
