/* placeholder, replaced below */
#include "sm_test.h"
static void nothing(void) {}
int main(void)
{
    static const sm_test_case cases[] = {SM_TEST(nothing), SM_TEST_END};
    return sm_test_run("cli", cases, NULL, NULL);
}
