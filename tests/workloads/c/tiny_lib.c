/*
 * tiny_lib: the small shared library many_libs loads many copies of: some
 * code, read-only data and writable data, so that each copy is mapped the
 * way a real library is (text, read-only, relocated and writable segments).
 */
static const char greeting[] = "tiny";
int tiny_counter = 1;

int tiny_lib_value(void)
{
	tiny_counter++;
	return greeting[tiny_counter % 4] + tiny_counter;
}
