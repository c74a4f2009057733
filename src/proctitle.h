/* proctitle: what `ps` shows for a process ("intaked: master process"). The
 * argv area is overwritten (environ is moved out of the way first, as nginx
 * does), and the kernel's comm name is set too. */
#ifndef INTAKE_PROCTITLE_H
#define INTAKE_PROCTITLE_H

void proctitle_init(int argc, char **argv);
void proctitle_set(const char *title);

#endif
