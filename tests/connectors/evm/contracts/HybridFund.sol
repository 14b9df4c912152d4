// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {ERC4626} from "@openzeppelin/contracts/token/ERC20/extensions/ERC4626.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {ERC4626Fees} from "./ERC4626Fees.sol";

interface IHybridOperator {
    event OperatorSet(address indexed controller, address indexed operator, bool approved);

    function setOperator(address operator, bool approved) external returns (bool);

    function isOperator(address controller, address operator) external view returns (bool status);
}

interface IHybridRedeem {
    event RedeemRequest(
        address indexed controller, address indexed owner, uint256 indexed requestId, address sender, uint256 shares
    );

    function requestRedeem(uint256 shares, address controller, address owner) external returns (uint256 requestId);

    function pendingRedeemRequest(uint256 requestId, address controller) external view returns (uint256 pendingShares);

    function claimableRedeemRequest(uint256 requestId, address controller)
        external
        view
        returns (uint256 claimableShares);
}

/// @notice The common ERC-7540 shape: synchronous ERC-4626 subscriptions (with an entry fee, the
/// OpenZeppelin ERC4626Fees pattern) and asynchronous redemptions. ERC-165 declares async redeem
/// and operators, not async deposit. Every request gets its own id (1, 2, 3, ...); the manager
/// fulfils any part of a request at the NAV of that moment; a controller's claims are served from
/// its requests in the order they were made. `previewRedeem`/`previewWithdraw` revert with
/// `AsyncRedeemOnly()`; claims are by shares (`redeem`), `withdraw` reverts with `ClaimBySharesOnly()`.
/// An exit fee is charged at fulfilment (`fulfilFeeBps`, OpenZeppelin's fee-on-total of the shares'
/// value at that moment, paid to the fee recipient in the fulfilment's transaction): the stablecoin set
/// aside for the claim is the rest, and the claim's Withdraw event shows no fee.
contract HybridFund is ERC4626Fees, Ownable, IHybridOperator, IHybridRedeem {
    using Math for uint256;

    struct Request {
        address controller;
        uint256 pendingShares;
        uint256 claimableShares;
        uint256 claimableAssets;
    }

    uint256 public entryFeeBps;
    uint256 public fulfilFeeBps;
    address public feeRecipient;
    uint256 public nextRequestId = 1;
    uint256 public totalReserved; // stablecoin set aside for fulfilled redemptions
    mapping(uint256 => Request) public requests;
    mapping(address => uint256[]) private _requestsOf;
    mapping(address => uint256) private _claimableShares;
    mapping(address => uint256) private _claimableAssets;
    mapping(address => mapping(address => bool)) public isOperator;

    error AsyncRedeemOnly();
    error ClaimBySharesOnly();
    error ZeroAmount();
    error UnknownRequest(uint256 requestId);
    error ExceedsPending(uint256 requestId, uint256 requested, uint256 pending);
    error NotControllerOrOperator(address controller, address caller);

    constructor(IERC20 asset_, string memory name_, string memory symbol_, address owner_, uint256 entryBps,
        address recipient) ERC20(name_, symbol_) ERC4626(asset_) Ownable(owner_) {
        entryFeeBps = entryBps;
        feeRecipient = recipient;
    }

    function _decimalsOffset() internal pure override returns (uint8) {
        return 12;
    }

    function supportsInterface(bytes4 interfaceId) external pure returns (bool) {
        return interfaceId == 0x01ffc9a7 || interfaceId == type(IHybridRedeem).interfaceId
            || interfaceId == type(IHybridOperator).interfaceId;
    }

    function share() external view returns (address) {
        return address(this);
    }

    function totalAssets() public view override returns (uint256) {
        return IERC20(asset()).balanceOf(address(this)) - totalReserved;
    }

    function setTotalAssets(uint256 target) external onlyOwner {
        uint256 held = totalAssets();
        if (target > held) {
            SafeERC20.safeTransferFrom(IERC20(asset()), msg.sender, address(this), target - held);
        } else if (target < held) {
            SafeERC20.safeTransfer(IERC20(asset()), msg.sender, held - target);
        }
    }

    function setFulfilmentFee(uint256 bps) external onlyOwner {
        fulfilFeeBps = bps;
    }

    function setOperator(address operator, bool approved) external returns (bool) {
        isOperator[msg.sender][operator] = approved;
        emit OperatorSet(msg.sender, operator, approved);
        return true;
    }

    // -- asynchronous redemptions --------------------------------------------------------------------

    function requestRedeem(uint256 shares, address controller, address owner) external returns (uint256 requestId) {
        if (owner != msg.sender && !isOperator[owner][msg.sender]) _spendAllowance(owner, msg.sender, shares);
        if (shares == 0) revert ZeroAmount();
        _transfer(owner, address(this), shares);
        requestId = nextRequestId++;
        requests[requestId] = Request(controller, shares, 0, 0);
        _requestsOf[controller].push(requestId);
        emit RedeemRequest(controller, owner, requestId, msg.sender, shares);
    }

    function pendingRedeemRequest(uint256 requestId, address controller) external view returns (uint256) {
        Request storage r = requests[requestId];
        return r.controller == controller ? r.pendingShares : 0;
    }

    function claimableRedeemRequest(uint256 requestId, address controller) external view returns (uint256) {
        Request storage r = requests[requestId];
        return r.controller == controller ? r.claimableShares : 0;
    }

    /// @notice The manager redeems `shares` of request `requestId` at today's NAV, less the fee at fulfilment.
    function fulfillRedeem(uint256 requestId, uint256 shares) external onlyOwner returns (uint256 assets) {
        Request storage r = requests[requestId];
        if (r.controller == address(0)) revert UnknownRequest(requestId);
        if (shares == 0) revert ZeroAmount();
        if (shares > r.pendingShares) revert ExceedsPending(requestId, shares, r.pendingShares);
        uint256 gross = _convertToAssets(shares, Math.Rounding.Floor);
        uint256 fee = _feeOnTotal(gross, fulfilFeeBps);
        assets = gross - fee;
        r.pendingShares -= shares;
        r.claimableShares += shares;
        r.claimableAssets += assets;
        _claimableShares[r.controller] += shares;
        _claimableAssets[r.controller] += assets;
        totalReserved += assets;
        _burn(address(this), shares);
        if (fee > 0) SafeERC20.safeTransfer(IERC20(asset()), feeRecipient, fee);
    }

    function maxRedeem(address controller) public view override returns (uint256) {
        return _claimableShares[controller];
    }

    function maxWithdraw(address controller) public view override returns (uint256) {
        return _claimableAssets[controller];
    }

    function redeem(uint256 shares, address receiver, address controller) public override returns (uint256 assets) {
        if (controller != msg.sender && !isOperator[controller][msg.sender]) {
            revert NotControllerOrOperator(controller, msg.sender);
        }
        uint256 maxShares = _claimableShares[controller];
        if (shares > maxShares) revert ERC4626ExceededMaxRedeem(controller, shares, maxShares);
        if (shares == 0) revert ZeroAmount();
        uint256 left = shares;
        uint256[] storage ids = _requestsOf[controller];
        for (uint256 i = 0; i < ids.length && left > 0; i++) {
            Request storage r = requests[ids[i]];
            if (r.claimableShares == 0) continue;
            uint256 take = Math.min(left, r.claimableShares);
            uint256 a = take == r.claimableShares
                ? r.claimableAssets
                : take.mulDiv(r.claimableAssets, r.claimableShares, Math.Rounding.Floor);
            r.claimableShares -= take;
            r.claimableAssets -= a;
            left -= take;
            assets += a;
        }
        _claimableShares[controller] -= shares;
        _claimableAssets[controller] -= assets;
        totalReserved -= assets;
        SafeERC20.safeTransfer(IERC20(asset()), receiver, assets);
        emit Withdraw(msg.sender, receiver, controller, assets, shares);
    }

    function withdraw(uint256, address, address) public pure override returns (uint256) {
        revert ClaimBySharesOnly();
    }

    function previewRedeem(uint256) public pure override returns (uint256) {
        revert AsyncRedeemOnly();
    }

    function previewWithdraw(uint256) public pure override returns (uint256) {
        revert AsyncRedeemOnly();
    }

    function _entryFeeBasisPoints() internal view override returns (uint256) {
        return entryFeeBps;
    }

    function _exitFeeBasisPoints() internal pure override returns (uint256) {
        return 0;
    }

    function _entryFeeRecipient() internal view override returns (address) {
        return feeRecipient;
    }

    function _exitFeeRecipient() internal view override returns (address) {
        return feeRecipient;
    }
}
