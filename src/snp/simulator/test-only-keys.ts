/**
 * !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
 * TEST-ONLY PRIVATE KEYS. PUBLIC ON PURPOSE. THEY PROTECT NOTHING.
 *
 * These are the signing keys of the SIMULATED SEV-SNP platform's fake AMD hierarchy (ARK, ASK, VCEK).
 * They were generated once with openssl for this repository and are committed so that simulated
 * evidence is reproducible across processes and machines. Anyone can sign anything with them.
 * A verifier must NEVER trust a chain rooted in them outside tests and local development: real
 * deployments pin AMD's real ARKs. Their certificates say "skr-sidecar SIMULATED (test only)".
 *
 *   openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:4096      (ARK, ASK)
 *   openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384    (VCEK)
 * !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
 */

/** TEST ONLY: RSA-4096 key of the simulated ARK (AMD Root Key). */
export const TEST_ONLY_ARK_KEY_PEM = `-----BEGIN PRIVATE KEY-----
MIIJQwIBADANBgkqhkiG9w0BAQEFAASCCS0wggkpAgEAAoICAQCZxAUv3GH9eoCE
3eWNr6EbvG7yrF/+3swqkX1a6YsqyM3w1Xa/MXfJ0Bn/oceAJAbaY5xxG8bQshYY
xh7zlguwGwoNGV1p7/Y/nwhQSSSPSfWSctihQ/O2j4Lq08GCuCChmoWXZmdWYIQG
KXOb9UHAvu6Tcl31GerBH0HNQowAhQPNKndkeBdk3EXiKcQAmtukxFLHwOXxFTNA
TJ7qgvXlDzZiaoU9nI7m0L2vffKRhi/mdBmtH1Onv2oaoFOX2L815YoqPpgm+mAP
ToCTgHPWX63VY1FIIL+EBiXpl0dzzbNo+3AlDuTPCbGW+U7b9EE51zvUT2XJdwGx
5HDX65JM+3xToXY6Qcp8qJVOpjH2kgjyD6YX3jYULHbIZJnd2y+cH3Z6gLxK8ovS
AK0H/lg3UPbc6Clg/6r2FHcm++9Db18ve6vWoJ+34fZZeNgbFi2zI5IkHkXDIHu+
j/5B7PVY3M6KCfGfdFUIxBpvhjEt95RJ6qEBRzjoXLSYRSPMPvZx8K4V9Vp+lmpY
/KmI/7Kx7OltKBdMDTIACFe2nvv4pGg7F5fBH0rwEv54LZEp6CUXH7lz53SaPysz
+9MAYsT+CwMhQZuitapR19HXrwZkJ/f9M55kmB3+9a3V0C1dg6EFoD6ewfbvkCLq
IwlQqfqZsYGqMM1X8y6JCdqYqoSUvwIDAQABAoICABJhmWZ4R4p/9hRsBkCivx/2
raNQMdrg6AfVWTvgm+SjGTicpqkCZoR3M7RtstCW/e67ZlHVyorbecK/uabQHVjm
/T5FoEzFWmrj6ErYrjMm2eFbiJlL6zq7+yAhQjUN18YZwmCFOv3bZHeWxZ2I0Fxp
4VE6TxBkEb5rrc0LaHsOFj8/aq2q9s5K0AZ84akE2hQ0l9oN2C8H+Wwf/LCiCSJh
vX7ppus6POb2Cxw1x8/XpQA9NBiQRyAlb1n8J8yzegrHrsrlWADzgJTegzD0HmTW
Y+G/ZqcNqyHtg44MqdumZQ0RXv2UbeEbZ+GurzD3XkNmKbPJQ1dgZOZ5cs03pEcP
fvbaW66ZeuoojiroOZTI6Iixjv4MD7OXEFkSWPQsgKcqP3pt3iCX5yrxNgyp6+7V
G2xQgMatZyCS5qi8cbIVKTXhJF9tgTlPACKUt6kN2J2hdz1VKM+sTK4go39AzwpH
PQjOjGNxzYMfF28hg2dmCfG15QvizMSCvo9EJauMk/J7LVPj5OVdhNMMN67ttpgM
u3b6SN3Le5eUSrAPMKu7upoTs8nqTHCDHPYuVx2j9Q/e0l0LaGe8Sa0MCHbJu5nS
8NOZkjANi0RS+xh6sj45h0B+yWO3LGoXG5JG/d1uSlWUQYffXtQfkj2cOBA6M2dI
eP1waLBI+gKNBC6/UKGBAoIBAQDJazksICk9Eh1DJgFTJB1YrMb9Dp9NQqUfArUk
Ga+oTr1Evy+KT0UCNGqvaDxOTjlOqRhZr/WJGvNFSQ/qCsOwxUkqIi3OHDVDo62q
fiR/aPxG+AAUxhPZC7RDJkpOKvXPYBwVg8FSANAv9IJjGJbLxxHjhji+q/3S+zSe
SkBF9A1SXzXu4QBNIHQjxvR2vy+Xb7tl2dRDsLCzMqZBfwn6HbO2eBpesFC00hhx
MOBlKQY28TG4WRXflWu4fn0LHi8PX5SU+79DeLya45k401cbaH0YSROcvq3yUKHU
l+lh7JOqwMuaf2pGnl57hPTkb2ZhR+1W5AHFWyDsSoEMHKZBAoIBAQDDbwP/ueq6
GkBIl6dNnSKtFyV1yVv+gJNljUDsEDaPWSGucJoYHn85CHY3bsGwhUSAjuDu5nS6
ALEbFJISivr5FTWR2RxLeO3YV5urKWFnQaS5N65/N53FiUvW0+Wo7rs/pSwf+xXt
wO2LUXSNDI63FInYMyJ28vSNkRwF7hw+NpYvUpOFnZp7zPPVYvZNMLWalKPsRHVI
CdH0up0V+n1OwLdAbffUzCfZ54lP/+nSMRWK1EQhW5HQQzrkM9eb7uLPl1q1pngA
xfujfTB+aQvbv2+zqjGl++IzSj+3kW52bqm1Nn+SCQkaTIghzcd/fzxhOClFMhtR
RTaWcU7CwHr/AoIBAQDDf+JnVPQSBdIHSg1BIK2nU1R1bUrsF8LjnaIqXxAjYgHN
h3BiY9yMbkoa5Sabrstq8S/kZakCIfl8B5V9ymL04hjI35HsG28LrwQylutgC4vK
ao7RmwzKv9SA1NqMkqAyX4wCyfbLXGS2FzKzcrtzIU7Ys3/CengM36zL8y/9dgu0
JxvXN+ct9VElJMhFtf5Ak7+l9U9VQFvSI1hB/Ee30DqN4ndd7u73A3Gb9B/psG8K
xwNGdpmHgaWj1ooST4LH/jLehJe5qqgOAtnG0UMcJEg/WTbDDkUSDHd3PNfXJ2SQ
+T7mP8PstWzpoTx9uS77P3A7xWV+pJwJHauyEODBAoIBAQCKp9v9dklr6i4LktUX
QtIUXiSsscT8BvsMhLA4C7S59XHpEmixjgmTTEabQ5BWDecxEq3RsV3FjbIZ1Xlh
gItZZ0vPg2sIvO56nIWMZVp+6NrWsgOyrKHaQXO2IjaBqYbeO/DXa8v+F/Aw9QSt
AejLSd4WrwjXvb32JqrsJiiRlybswjh6BvxQs3OXxJOc5l8iIi0+9r8C8jys1i2X
J1X6Js6c/qhjqMjpV9VbFeUtxLdU/Q6tYAtO6DQDLijdsBnpUKgB0u63FcBYGPzr
4tmP+f1lSe3ZpqCw5Q/ZzGvDyPXM5LKTyKdVqlC3MwlEkuAi1baqKkepXGLDT/ai
Q++/AoIBAC64nK4JoxYx/hSuqFfMrou0HQG9lN6Ifc0NRUGOAFJ2ZRCY5DguVIP9
6hhJuE4VtFh/Be3xAMqCIXwtiXMem4BEt+IkqWcx2M8rlAiQ/elcarbSytfctGPL
Hkq6rYa+B7zg1Zk/0eR3fFiCfaJPLnMW4LlyiTmQFE1BjkefgjjTtgSsDh7H7y9W
MbcEMReKrWc8CxQ4Mc2fFREjp4CxvwKSb2awW6PDj7Y+8/MpSYKB/6vbOCF6MCmG
tL9Hwd1DHn9tIxXgKXU5qzG2Iz3d8fd81nCt2LRP8UWALP7fWavz6v2SmWPfLQqJ
qQGsIliEKELWCJXJ+lKryRGEmkFYP9w=
-----END PRIVATE KEY-----
`;

/** TEST ONLY: RSA-4096 key of the simulated ASK (AMD SEV Key). */
export const TEST_ONLY_ASK_KEY_PEM = `-----BEGIN PRIVATE KEY-----
MIIJQwIBADANBgkqhkiG9w0BAQEFAASCCS0wggkpAgEAAoICAQCFuz0rYAbth230
vd3074nsNo6OxBhsJ4sxHL93ssXMoLmmHqda1EVnxT6HwU8r+TFXqnYqpWUJfpMC
QG16lfbOF1pZkbA8d3QkedJofjDbyjFT0xlQFj3J4xdmcvJFjoiIswrYQpCewwgD
Q6ALDyspzXvcGysrNMrdGysUXtvCi3Ivdk6muYbEfOA3VR7iCMvUK/mSUnA5CcSQ
NHycXeU4Wd/lglrotRnasNRq2h2T2FePmrd8gYsNThkClQbZzsD8XhCU7X0MVWBV
gfhcWP+fnnpb45TJZQ1zqyE4R+4FL3VT2U/WGFMCTp/NlyoJ4WmsoI401mIvrHFJ
eoQJ+WmCurwrWZfKn7DdRwA0P1uVUNUvTO8scgsKD8utqU0itpfdWAOKBjDe40zF
WRhXv2HqAvmA0E0TiYDrF14Jj5wmRVIA1vPF09RQtlkTHLjMw1uC83pWZYw0DPfl
7xHlvDL3luYXmrJubR5BMcHTYd3RcNLstDNi0h88habekTOiy9su4+ke99mRqaGv
PDLgFgUi9FrQABJfqCvy5r/ujJSXqhQWNiHeo/tiV17uOUlXlapPbjdY0aVNnfUc
Iw3y8aOjlyNhvau0/EruQDwUZkkLgvNr6nz51ZYBPW1/ayhXkgROzoYXPewcTR2q
+1tbiE5MHEptsbQlPtbJD3/2OMtBewIDAQABAoICAAOOBhmW2hYBk6iZTN5SjbsT
w1LEDTptnc7vwZ7jbCdPQrSlO88ufpoXn8qJBJIZvQE/6mDrHLrMhb+5gI9/atwn
cOeZ5U2+K2vRpyzPd6De5B1+qmIWZB8UEg6GLUDnE/XjasZPS84f/g52cRTcdkoM
ZAxBsg21my8pAcpcwkn8XfCW5UXlI+ROM3hwfnJObI0yDlZ8BYGCEL9TtLNozGcb
tQ6LPuAZ+f+/HNwYQ77d1dVxUVQD3BfiYDX1t7vUlTGt30kb4Gu3AiAKm+axF8wh
efMHfrl+VM7+YgnkKnIN10Fa1V+qCSWx6Olm6Q0W5lZIK7iujMMs8MpCcYcTxoVl
m6BlsrmNMrneInQ5vmbQNh369dYakg9COOvgQBdd9T2VaPWWwXup8lb12idt68sq
aAwDHVQXIk+fUdWVpxz32oEKeEAJDmiPZCiAY2dWCU6zKP4uf0IPaXvH9dJvFeGS
CD07Ptyw3njBSxXCKroGgiT9wCAOFbL0aZOxhWGV/+DPLxEij3F2QU1g8nx/BL9E
Tq1xLGRQhmTTh0Rw3DglYuLNGkaIhTjE++pqWwZMe2938XyuZnjCEa8YfEDFjkK3
bw2s9ELXHwldhcYxv0W8B12M1XE+Q+90msNjHZ9lVSiUKufobli1ftGlcB+oqRmC
ZUwuhOPpHoIwh+mJbkoRAoIBAQC7Y0oy7i565B9NKHrlIgi80x/bSCLOAbGow0BD
DyRjfkykU695Jy3As6XWrbNJkFgbyNHuUHzqQPBezPCHK2N3tUTGdUdfE4AaZe0e
ZZGwM4/9mJ+gGr/kb5dP1DQDt5QtpMl/c/kwjowwGPYR1nz1x4nvf6hUkAfJbZ2C
5lY9IGbLuj8JqlIg4Y9uyPRdWUpOEQPAXeBRCtod7YB1bdUdcps7kjOeyXZTjK4n
bzddWn0wvxRup2QrFG86sEJF7yea2LPcSzmZuecs0E2MGNCtSQr3Z4oxNkNZfHX2
sYRtBVqMLOXj3ItllKlyV2tmmpLMN/PeF98uFNxSVKJE4zkrAoIBAQC2snzXJNLU
3q52KIlSnftqW4aOyUynYcMBfpU4D+2LPZKfI46jzgU7tJBvOPvipTr2XlAjZ0wq
R9BpRZbbWYu7lVGPWA4OXiQN+RrvC6ylSemiQkt6Jl/FImOMxd7uq9lSK3GucbNt
Es0RTU5dgiSHiAhATXqT4+LgnEisJfv7kB7MF0YNsbTTJzDoFZQ2BvId3MvyA1wS
3wWhFC9SykjY9PaZHv/PT3AFRirz7LwKQAVNdml0vXCd/CRCiE9tbKCEMVMS4Jn1
LeEcmHBrsj4bdpvTqzB5kwmQhmIC0RUx/j4uKnN7oiErykCtFXP35foxSw/T+k0u
Q8DGDitKj1DxAoIBAQCALlUtLZyB19ZJk20tm/BaKhlaiKe2P5ZlmNo2hP8hR93p
co1P1KsJbFn+1ecUZTbAGsjvugMYwr8qOgo2jEmIM2kOUF83/EDezeY7qsLTwxG2
KVbX0DR/cI4Sv1etS0CDUHu9QXmt63Sd2hVI8m2cOphySeK9paCN+vuJ9UH8olNu
/MHuPKHdeC4DXFc8G74mVKE6T30IMuItIq+CpFTpxeHGCCZjcfANCuh+dSdsJmAI
nky9vKdaiKnlfXh4GjX/SEkQYizOqUonb338XWUxhAuKXTs8mp/LcMXIsHmjkcv0
oynGirCYFe8rFf2TvBy6sXOR8sZp4T8s2lP9x2jtAoIBAQCrMq5RXKxD1TdeebXU
uT2y+Hkqq+8smiuF5vwlQKez5srSXRt428GDpTwDPT6rr3GFE/O8eTuiExF01ET8
3vhVmyKGVFk3lXfrsBZREnuBl7Va2wynNfZgYE0wyOqSdG581UD92oXsG8YWBH7+
mMlqR0qUFwZaNx2OpGRlDGMH5JE3Zke65V8wznTBxhbQWcnfudtSuVs6Q8qemq+N
wQhqZYH/ElFcDnBGQO5XDOtYH43YfLFtN2ekY3YG8nybaUMxHJdgBR+/5HIhvab7
BFe2nHqA6tXN1r8LsyF8yjg2VKwnzpfQrqiuxCO/DW9SSSsdrdzzIoXYaJzn+rcO
cyXBAoIBAGOo1t/eWInU3ikZaRmEUB8ynNqDIub5SWYb0RJxkcKgDo30Q+OmPvp3
bXzyCjzVpbinwsFvbp7wfo/MBd6btlcVOj+pDsSZWbPCXZPJverSSIS4Nxkfpnn3
oU75RyAsArMGhOPlUjSEpj0z2U/gpm1EfvlhLFrOhhtsaF4zwzvkny9m7mtJB0Y9
pb6V7g+yZF94PS1K6WypRykNhMRILDsG+q1DC3YpsTberyL3xhRe6U27hQ83rcdr
KnuFPIVo5qevymfVUrkGVOceFu0RCANZZ09xaukqAZI/YI4UJ60BNaJrSUhFIGK3
kggJuAgZwiaiC4dyYvAUsBGYiXIMNYc=
-----END PRIVATE KEY-----
`;

/**
 * TEST ONLY: ECDSA P-384 key standing in for the simulated chips' fused secret. Each (chip id, TCB)
 * gets its own VCEK key derived from it (amd-chain.ts deriveVcekKey), as real VCEKs are derived.
 */
export const TEST_ONLY_VCEK_KEY_PEM = `-----BEGIN PRIVATE KEY-----
MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDDU8vldc+iquyWNlFxK
NJQEtqBPF8O7R4ocvpufXorjBpf3MOtXXTkGSq4P9iqeyVuhZANiAARRXQxgM6I2
lvEk9oJHAZ7tbhVvLhdAYHUcn0pl/Twl+GVo4VJuVLHZetF/AQ5j5KPaHdSHne9P
MV/Ere6hrUrjNu5+UW+3X/ja4EKe25CoF+BjlqKphwfb4+wNRruNcCo=
-----END PRIVATE KEY-----
`;
