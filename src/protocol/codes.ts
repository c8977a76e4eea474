/** Wire protocol message type bytes, as numbers so the hot path compares integers. */
export const enum FE {
  Bind = 0x42, // B
  Close = 0x43, // C
  Describe = 0x44, // D
  Execute = 0x45, // E
  Flush = 0x48, // H
  Parse = 0x50, // P
  Query = 0x51, // Q
  Sync = 0x53, // S
  Terminate = 0x58, // X
  CopyData = 0x64, // d
  CopyDone = 0x63, // c
  CopyFail = 0x66, // f
  Password = 0x70, // p (also SASLInitialResponse / SASLResponse)
  FunctionCall = 0x46, // F
}

export const enum BE {
  ParseComplete = 0x31, // 1
  BindComplete = 0x32, // 2
  CloseComplete = 0x33, // 3
  NotificationResponse = 0x41, // A
  CommandComplete = 0x43, // C
  DataRow = 0x44, // D
  ErrorResponse = 0x45, // E
  CopyInResponse = 0x47, // G
  CopyOutResponse = 0x48, // H
  EmptyQueryResponse = 0x49, // I
  BackendKeyData = 0x4b, // K
  NoticeResponse = 0x4e, // N
  Authentication = 0x52, // R
  ParameterStatus = 0x53, // S
  RowDescription = 0x54, // T
  NegotiateProtocolVersion = 0x76, // v
  CopyBothResponse = 0x57, // W
  ReadyForQuery = 0x5a, // Z
  NoData = 0x6e, // n
  PortalSuspended = 0x73, // s
  ParameterDescription = 0x74, // t
  CopyData = 0x64, // d
  CopyDone = 0x63, // c
}

/** Request codes of messages that have no type byte. */
export const PROTOCOL_3_0 = 196608;
export const SSL_REQUEST = 80877103;
export const GSSENC_REQUEST = 80877104;
export const CANCEL_REQUEST = 80877102;

/** Transaction status byte of ReadyForQuery. */
export const TX_IDLE = 0x49; // I
export const TX_IN_BLOCK = 0x54; // T
export const TX_FAILED = 0x45; // E
