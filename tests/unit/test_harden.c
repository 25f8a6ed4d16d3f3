/* Process hardening (src/cli.h): what every process holding keys does first. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include <cmocka.h>

#include "../../src/cli.h"

static void test_harden(void **state)
{
	struct rlimit rl = { 1 << 20, RLIM_INFINITY };

	(void)state;
	setrlimit(RLIMIT_CORE, &rl);
	prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
	assert_int_equal(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), 1);
	cli_harden();
	assert_int_equal(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), 0);
	assert_int_equal(getrlimit(RLIMIT_CORE, &rl), 0);
	assert_int_equal(rl.rlim_cur, 0);
	assert_int_equal(rl.rlim_max, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_harden),
	};

	return cmocka_run_group_tests_name("harden", tests, NULL, NULL);
}
