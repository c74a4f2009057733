/* container_of: the struct that embeds a member (libev watchers, jobs). */
#ifndef INTAKE_CONTAINER_H
#define INTAKE_CONTAINER_H

#include <stddef.h>

#define container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

#endif
