#ifndef POPGATE_CLIBPCAP_SHIM_H
#define POPGATE_CLIBPCAP_SHIM_H
#include <pcap/pcap.h>
#endif
