/** Where Azure's vTPM keeps the CVM evidence (CVM-PROTOCOL §2). */
export const HCL_REPORT_INDEX = 0x01400001;
/** Guest-defined, 64 bytes: the user data the paravisor folds into the next report's claims. */
export const USER_DATA_INDEX = 0x01400002;
export const USER_DATA_SIZE = 64;
export const AK_CERT_INDEX = 0x01c101d0;
export const AK_HANDLE = 0x81000003;
